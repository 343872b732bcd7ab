//! The state directory (docs/replay.md): loading `kxdp.yaml` and the Kubernetes
//! manifests beside it into a [`ClusterState`], shared by `kxdp replay` and `kxdp agent --state`.
//!
//! This module owns the directory contract (which files are read, in which order, how
//! documents and `List`s are split, what a duplicate is) and load-time validation: every
//! field `translate` relies on is checked here, so a bad manifest is reported once, up
//! front, as `file: Kind namespace/name: field.path: problem`, instead of surfacing later as
//! a silently missing route.

pub mod changes;
mod validate;
pub mod watch;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{NetworkPolicy, ServiceCIDR};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

use crate::config::{AgentConfig, ConfigError};
use crate::k8s::DEFAULT_NAMESPACE;
use changes::Kind;

/// The agent config's file name inside the state directory; every other `*.yaml`/`*.yml`
/// file is manifests.
pub const CONFIG_FILE: &str = "kxdp.yaml";

/// The Kubernetes objects kxdp programs from, as loaded (or, live, as watched). Each list
/// is in load order: files by name, then document order. `translate` does not depend on it.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub network_policies: Vec<NetworkPolicy>,
    /// networking.k8s.io/v1 ServiceCIDRs: where the cluster allocates ClusterIPs from. When
    /// there are none, kxdp.yaml's `serviceCIDR` stands in (`translate::service_cidrs`).
    pub service_cidrs: Vec<ServiceCIDR>,
}

impl ClusterState {
    /// The labels of Node `name` (empty when there is no such Node): what kxdp.yaml's
    /// `nodes:` entries match on.
    pub fn node_labels(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        self.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }
}

/// A loaded state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    /// `kxdp.yaml`, or the defaults when the file is absent.
    pub config: AgentConfig,
    pub cluster: ClusterState,
    /// Things ignored on the way (unknown kinds), one line each, prefixed with the file.
    pub warnings: Vec<String>,
}

/// Why a state directory could not be loaded. The Display always starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", dir.display())]
    ReadDir { dir: PathBuf, source: io::Error },
    #[error("{file}: {source}")]
    ReadFile { file: String, source: io::Error },
    #[error("{file}: {source}")]
    Config { file: String, source: ConfigError },
    /// The YAML did not parse, or did not fit the Kubernetes type; `message` is serde_yaml's,
    /// which carries the field path and the line.
    #[error("{file}: {object}: {message}")]
    Parse {
        file: String,
        object: String,
        message: String,
    },
    /// A field parsed but holds something kxdp cannot use.
    #[error("{file}: {object}: {field}: {message}")]
    Invalid {
        file: String,
        object: String,
        field: String,
        message: String,
    },
    /// The same kind/namespace/name twice: which one should win is not ours to guess.
    #[error("{file}: {object}: defined twice (first in {first_file})")]
    Duplicate {
        file: String,
        object: String,
        first_file: String,
    },
}

/// Loads a state directory: `kxdp.yaml` (optional) and every other `*.yaml`/`*.yml` file in
/// it, in file-name order. Subdirectories are not read, and neither are dot-files (as the
/// shell's `*.yaml` would not match them; a mounted ConfigMap keeps its `..data` there).
pub fn load_state_dir(dir: &Path) -> Result<StateDir, StateError> {
    let read_dir_err = |source| StateError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    let mut config_path = None;
    for entry in std::fs::read_dir(dir).map_err(read_dir_err)? {
        let entry = entry.map_err(read_dir_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            // Not UTF-8, so not a name anyone wrote as `*.yaml` in this contract.
            continue;
        };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let path = entry.path();
        // fs::metadata follows symlinks: ConfigMap volumes present files as links.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if name == CONFIG_FILE {
            config_path = Some(path);
        } else {
            files.push((name.to_string(), path));
        }
    }
    files.sort();

    let config = match config_path {
        Some(path) => {
            let text = read(CONFIG_FILE, &path)?;
            AgentConfig::from_yaml(&text).map_err(|source| StateError::Config {
                file: CONFIG_FILE.to_string(),
                source,
            })?
        }
        None => AgentConfig::default(),
    };

    let mut loader = Loader::default();
    for (name, path) in &files {
        let text = read(name, path)?;
        loader.load_file(name, &text)?;
    }
    Ok(StateDir {
        config,
        cluster: loader.cluster,
        warnings: loader.warnings,
    })
}

fn read(file: &str, path: &Path) -> Result<String, StateError> {
    std::fs::read_to_string(path).map_err(|source| StateError::ReadFile {
        file: file.to_string(),
        source,
    })
}

/// Where a document (or a `List` item) sits, for error messages and for re-reading it.
#[derive(Clone, Copy)]
struct Place<'a> {
    file: &'a str,
    text: &'a str,
    /// 1-based, counting empty documents too, so it matches counting `---` by eye.
    doc: usize,
    /// Index in the document's `items` when the document is a `List`.
    item: Option<usize>,
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.doc)?;
        if let Some(i) = self.item {
            write!(f, ": items[{i}]")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Loader {
    cluster: ClusterState,
    warnings: Vec<String>,
    /// (kind, namespace, name) -> file it came from.
    seen: HashMap<(Kind, String, String), String>,
}

impl Loader {
    fn load_file(&mut self, file: &str, text: &str) -> Result<(), StateError> {
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let place = Place {
                file,
                text,
                doc: i + 1,
                item: None,
            };
            let value = Value::deserialize(document).map_err(|e| StateError::Parse {
                file: file.to_string(),
                object: place.to_string(),
                message: e.to_string(),
            })?;
            self.load_value(value, place, None)?;
        }
        Ok(())
    }

    /// One document or `List` item. `list_kind` is the item kind a typed list (`PodList`)
    /// implies for items that do not say.
    fn load_value(
        &mut self,
        value: Value,
        place: Place<'_>,
        list_kind: Option<Kind>,
    ) -> Result<(), StateError> {
        let invalid = |object: String, field: &str, message: String| StateError::Invalid {
            file: place.file.to_string(),
            object,
            field: field.to_string(),
            message,
        };
        let map = match &value {
            // An empty document (`---` twice, a trailing `---`, only comments).
            Value::Null => return Ok(()),
            Value::Mapping(m) => m,
            other => {
                return Err(StateError::Parse {
                    file: place.file.to_string(),
                    object: place.to_string(),
                    message: format!(
                        "expected a Kubernetes object (a mapping), found {}",
                        value_type(other)
                    ),
                });
            }
        };
        let kind = match map.get("kind") {
            Some(Value::String(s)) => s.clone(),
            None if list_kind.is_some() => {
                list_kind.map(|k| k.name().to_string()).unwrap_or_default()
            }
            None => return Err(invalid(place.to_string(), "kind", "missing".into())),
            Some(_) => {
                return Err(invalid(
                    place.to_string(),
                    "kind",
                    "expected a string".into(),
                ));
            }
        };
        let api_version = match map.get("apiVersion") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(invalid(
                    format!("{place}: kind {kind}"),
                    "apiVersion",
                    "expected a string".into(),
                ));
            }
        };

        let list_item_kind = kind.strip_suffix("List").and_then(|k| {
            if k.is_empty() {
                Some(None)
            } else {
                Kind::from_name(k).map(Some)
            }
        });
        if let Some(item_kind) = list_item_kind {
            if place.item.is_some() {
                return Err(invalid(
                    place.to_string(),
                    "kind",
                    format!("{kind} inside a List is not supported"),
                ));
            }
            return match map.get("items") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::Sequence(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let at = Place {
                            item: Some(i),
                            ..place
                        };
                        self.load_value(item.clone(), at, item_kind)?;
                    }
                    Ok(())
                }
                Some(_) => Err(invalid(
                    format!("{place}: kind {kind}"),
                    "items",
                    "expected a sequence".into(),
                )),
            };
        }

        let Some(known) = Kind::from_name(&kind) else {
            let name = map
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(|n| format!(" {n}"))
                .unwrap_or_default();
            let warning = format!(
                "{}: {place}: kind {kind}{name} ignored: kxdp reads only {}",
                place.file,
                Kind::ALL.map(Kind::name).join(", ")
            );
            tracing::warn!("{warning}");
            self.warnings.push(warning);
            return Ok(());
        };
        let object = object_label(known, map).unwrap_or_else(|| format!("{place}: kind {kind}"));
        if let Some(v) = &api_version
            && v != known.api_version()
        {
            return Err(invalid(
                object,
                "apiVersion",
                format!(
                    "{v:?}: kxdp reads {kind} at apiVersion {}",
                    known.api_version()
                ),
            ));
        }

        match known {
            Kind::Node => {
                let o: Node = self.typed(value, place, &object)?;
                self.add(known, o, place, |c| &mut c.nodes, validate::node)
            }
            Kind::Namespace => {
                let o: Namespace = self.typed(value, place, &object)?;
                self.add(known, o, place, |c| &mut c.namespaces, validate::namespace)
            }
            Kind::Pod => {
                let o: Pod = self.typed(value, place, &object)?;
                self.add(known, o, place, |c| &mut c.pods, validate::pod)
            }
            Kind::Service => {
                let o: Service = self.typed(value, place, &object)?;
                self.add(known, o, place, |c| &mut c.services, validate::service)
            }
            Kind::EndpointSlice => {
                let o: EndpointSlice = self.typed(value, place, &object)?;
                self.add(
                    known,
                    o,
                    place,
                    |c| &mut c.endpoint_slices,
                    validate::endpoint_slice,
                )
            }
            Kind::NetworkPolicy => {
                let o: NetworkPolicy = self.typed(value, place, &object)?;
                self.add(
                    known,
                    o,
                    place,
                    |c| &mut c.network_policies,
                    validate::network_policy,
                )
            }
            Kind::ServiceCIDR => {
                let o: ServiceCIDR = self.typed(value, place, &object)?;
                self.add(
                    known,
                    o,
                    place,
                    |c| &mut c.service_cidrs,
                    validate::service_cidr,
                )
            }
        }
    }

    /// Converts the document to its Kubernetes type. On failure the document is read again
    /// straight from the text, because only that path knows the field path and line.
    fn typed<K: DeserializeOwned>(
        &self,
        value: Value,
        place: Place<'_>,
        object: &str,
    ) -> Result<K, StateError> {
        serde_yaml::from_value(value).map_err(|e| StateError::Parse {
            file: place.file.to_string(),
            object: object.to_string(),
            message: locate_error::<K>(place).unwrap_or_else(|| e.to_string()),
        })
    }

    /// Defaults the namespace, validates, checks for a duplicate, and stores the object.
    fn add<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(
        &mut self,
        kind: Kind,
        mut object: K,
        place: Place<'_>,
        list: impl FnOnce(&mut ClusterState) -> &mut Vec<K>,
        validate: impl FnOnce(&K) -> Result<(), validate::FieldError>,
    ) -> Result<(), StateError> {
        let meta = object.metadata_mut();
        if kind.namespaced() {
            if meta.namespace.as_deref().is_none_or(str::is_empty) {
                meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
            }
        } else {
            // Cluster-scoped: a namespace here means nothing (the API server drops it).
            meta.namespace = None;
        }
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            return Err(StateError::Invalid {
                file: place.file.to_string(),
                object: format!("{place}: kind {}", kind.name()),
                field: "metadata.name".into(),
                message: "missing".into(),
            });
        };
        let namespace = meta.namespace.clone().unwrap_or_default();
        let label = describe(kind, &namespace, &name);
        validate(&object).map_err(|e| StateError::Invalid {
            file: place.file.to_string(),
            object: label.clone(),
            field: e.field,
            message: e.message,
        })?;
        let key = (kind, namespace, name);
        if let Some(first) = self.seen.get(&key) {
            return Err(StateError::Duplicate {
                file: place.file.to_string(),
                object: label,
                first_file: first.clone(),
            });
        }
        self.seen.insert(key, place.file.to_string());
        list(&mut self.cluster).push(object);
        Ok(())
    }
}

/// The object's name for messages when it has one: `Pod default/web-0`, `Node node-a`.
fn object_label(kind: Kind, map: &serde_yaml::Mapping) -> Option<String> {
    let meta = map.get("metadata")?;
    let name = meta.get("name")?.as_str().filter(|n| !n.is_empty())?;
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    Some(describe(kind, namespace, name))
}

fn describe(kind: Kind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("{} {namespace}/{name}", kind.name())
    } else {
        format!("{} {name}", kind.name())
    }
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Re-reads the document (or the list item) as `K` straight from the text, for serde_yaml's
/// error with field path and line. `None` if that unexpectedly succeeds.
fn locate_error<K: DeserializeOwned>(place: Place<'_>) -> Option<String> {
    let document = serde_yaml::Deserializer::from_str(place.text).nth(place.doc - 1)?;
    let result = match place.item {
        None => K::deserialize(document).map(drop),
        Some(index) => ListItemProbe::<K> {
            index,
            kind: PhantomData,
        }
        .deserialize(document),
    };
    result.err().map(|e| e.to_string())
}

/// Deserializes a `List` document skipping everything but `items[index]`, which is read as
/// `K`: serde_yaml then reports errors as `items[3].spec...` with the real line.
struct ListItemProbe<K> {
    index: usize,
    kind: PhantomData<fn() -> K>,
}

impl<'de, K: Deserialize<'de>> DeserializeSeed<'de> for ListItemProbe<K> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, K: Deserialize<'de>> Visitor<'de> for ListItemProbe<K> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a List")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut items = Some(ItemsProbe::<K> {
            index: self.index,
            kind: PhantomData,
        });
        while let Some(key) = map.next_key::<Value>()? {
            match (key.as_str(), items.take()) {
                (Some("items"), Some(probe)) => map.next_value_seed(probe)?,
                (_, probe) => {
                    items = probe;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ItemsProbe<K> {
    index: usize,
    kind: PhantomData<fn() -> K>,
}

impl<'de, K: Deserialize<'de>> DeserializeSeed<'de> for ItemsProbe<K> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, K: Deserialize<'de>> Visitor<'de> for ItemsProbe<K> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let more = if i == self.index {
                seq.next_element::<K>()?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}
