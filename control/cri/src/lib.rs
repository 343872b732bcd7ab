//! A blocking client of the Kubernetes CRI API over a unix socket: the calls a kubelet makes
//! to its container runtime, for `kxdp-lab --runtime containerd`, where the lab plays the
//! kubelet of each node.
//!
//! The messages are the `k8s-cri` crate's (generated from the CRI protobuf, re-exported as
//! [`api`]); this crate adds the connection (tonic over a unix socket), a deadline per call,
//! and typed errors that keep the gRPC status, so a caller can tell "the CNI plugin refused"
//! from "containerd is not there".
//!
//! The lab is synchronous; each client owns a current-thread tokio runtime and blocks on it.

mod error;
mod sandbox;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use error::CriError;
pub use k8s_cri::v1 as api;
pub use sandbox::netns_path;
/// The gRPC status codes in [`CriError::Call`].
pub use tonic::Code;

/// What a call may take unless the caller says otherwise: RunPodSandbox runs the CNI chain
/// (and the kubelet gives it 4 minutes); everything else is quick.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The CRI API version a kubelet announces in Version.
const KUBELET_API_VERSION: &str = "v1";

/// A connection to one runtime's CRI socket.
#[derive(Debug)]
pub struct Client {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    timeout: Duration,
}

impl Client {
    /// Connects to `socket` (containerd's `grpc.address`); fails when nothing answers there.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, CriError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| CriError::Runtime { source })?;
        let path = socket.to_path_buf();
        let connect = async move {
            // The URI is a placeholder tonic needs; the connector ignores it and dials the socket.
            Endpoint::from_static("http://[::1]:50051")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
                .await
        };
        let channel = rt
            .block_on(async { tokio::time::timeout(timeout, connect).await })
            .map_err(|_| CriError::ConnectTimeout {
                socket: socket.to_path_buf(),
                timeout,
            })?
            .map_err(|source| CriError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Client {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the deadline of every later call.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Runs one call to its deadline; maps its failure to [`CriError::Call`].
    fn call<T, F>(&self, method: &'static str, fut: F) -> Result<T, CriError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        // The timer is made inside the runtime (block_on's future), where tokio's clock is.
        match self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, fut).await })
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CriError::Call {
                method,
                code: status.code(),
                message: status.message().to_string(),
            }),
            Err(_) => Err(CriError::Timeout {
                method,
                timeout: self.timeout,
            }),
        }
    }

    /// Version: the runtime's name and version (and proof that its CRI plugin serves).
    pub fn version(&self) -> Result<api::VersionResponse, CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "Version",
            c.version(api::VersionRequest {
                version: KUBELET_API_VERSION.into(),
            }),
        )
    }

    /// RunPodSandbox: the runtime makes the pod's network namespace, runs the CNI chain's
    /// ADD in it and starts the pause container. Returns the sandbox ID.
    pub fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        let r = self.call(
            "RunPodSandbox",
            c.run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }),
        )?;
        Ok(r.pod_sandbox_id)
    }

    /// PodSandboxStatus, verbose: the `info` map carries the runtime's own view (for
    /// containerd, the network namespace's path among it).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatusResponse, CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "PodSandboxStatus",
            c.pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            }),
        )
    }

    /// StopPodSandbox: stops its containers, tears its network down (CNI DEL) and removes
    /// the network namespace. A kubelet may call it again; so does RemovePodSandbox.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "StopPodSandbox",
            c.stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "RemovePodSandbox",
            c.remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .map(drop)
    }

    /// Every sandbox the runtime knows, ready or not.
    pub fn list_pod_sandboxes(&self) -> Result<Vec<api::PodSandbox>, CriError> {
        let mut c = self.runtime.clone();
        let r = self.call(
            "ListPodSandbox",
            c.list_pod_sandbox(api::ListPodSandboxRequest { filter: None }),
        )?;
        Ok(r.items)
    }

    /// CreateContainer in a sandbox (the sandbox's config goes with it, as a kubelet sends
    /// it). Returns the container ID.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        let r = self.call(
            "CreateContainer",
            c.create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }),
        )?;
        Ok(r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "StartContainer",
            c.start_container(api::StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .map(drop)
    }

    /// StopContainer: SIGTERM (or the image's stop signal), SIGKILL after `grace`.
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "StopContainer",
            c.stop_container(api::StopContainerRequest {
                container_id: id.into(),
                timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
            }),
        )
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "RemoveContainer",
            c.remove_container(api::RemoveContainerRequest {
                container_id: id.into(),
            }),
        )
        .map(drop)
    }

    /// The container's state, exit code and log path.
    pub fn container_status(&self, id: &str) -> Result<api::ContainerStatus, CriError> {
        let mut c = self.runtime.clone();
        let r = self.call(
            "ContainerStatus",
            c.container_status(api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }),
        )?;
        r.status.ok_or(CriError::Incomplete {
            method: "ContainerStatus",
            missing: "status",
        })
    }

    /// Whether the runtime has `image` (by name); images come from `ctr images import`
    /// here, since no registry is reachable.
    pub fn has_image(&self, image: &str) -> Result<bool, CriError> {
        let mut c = self.images.clone();
        let r = self.call(
            "ImageStatus",
            c.image_status(api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            }),
        )?;
        Ok(r.image.is_some())
    }
}
