//! Attaching the loaded programs to interfaces and detaching them.
//!
//! Attachments are aya links owned by the [`Ebpf`] they were made from: dropping that
//! `Ebpf` (or the process exiting) detaches every program it attached, so a crashed agent
//! leaves no XDP program behind on the node. [`detach`] removes one earlier.
//!
//! Interfaces are resolved in the network namespace of the calling thread, so an agent
//! running under `nsenter --net=...` sees its node's interfaces.

use std::ffi::{CStr, CString};
use std::fmt;

use aya::Ebpf;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, XdpMode};

use crate::{XdpError, program_mut};

/// A network interface of the current network namespace: its index and, for messages,
/// its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    index: u32,
    name: String,
}

impl Interface {
    /// Looks `name` up (`if_nametoindex`).
    pub fn by_name(name: &str) -> Result<Self, XdpError> {
        let unknown = || XdpError::UnknownInterface(name.to_owned());
        let c_name = CString::new(name).map_err(|_| unknown())?;
        // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            return Err(unknown());
        }
        Ok(Self {
            index,
            name: name.to_owned(),
        })
    }

    /// Looks `index` up (`if_indextoname`).
    pub fn by_index(index: u32) -> Result<Self, XdpError> {
        let mut buf: [libc::c_char; libc::IF_NAMESIZE] = [0; libc::IF_NAMESIZE];
        // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write, NUL included.
        let found = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
        if found.is_null() {
            return Err(XdpError::UnknownInterface(format!("ifindex {index}")));
        }
        // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Ok(Self {
            index,
            name: name.to_string_lossy().into_owned(),
        })
    }

    /// The ifindex: the key of `port_slots` ([`crate::set_port_slot`]).
    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (ifindex {})", self.name, self.index)
    }
}

/// How a program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP, run by the driver (`xdpdrv` in `ip link`; veth supports it).
    Driver,
    /// Generic XDP, run by the kernel on the skb (`xdpgeneric`): works on any interface,
    /// slower.
    Skb,
}

impl AttachMode {
    fn aya(self) -> XdpMode {
        match self {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Driver => "driver",
            AttachMode::Skb => "skb",
        })
    }
}

/// One program attached to one interface; hand it back to [`detach`]. Not `Clone`: each
/// attachment is detached once.
#[derive(Debug)]
pub struct Attachment {
    program: &'static str,
    interface: Interface,
    mode: AttachMode,
    link: XdpLinkId,
}

impl Attachment {
    pub fn program(&self) -> &'static str {
        self.program
    }

    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }
}

/// Attaches the loaded program `program` (one of [`crate::UPLINK_PROGRAM`],
/// [`crate::POD_PROGRAM`], [`crate::HOST_PROGRAM`]) to `interface`, in driver mode if the
/// interface supports it, else in SKB mode; [`Attachment::mode`] says which. One program
/// may be attached to many interfaces. Fails if the interface already has an XDP program.
pub fn attach(
    ebpf: &mut Ebpf,
    program: &'static str,
    interface: &Interface,
) -> Result<Attachment, XdpError> {
    let xdp = program_mut(ebpf, program)?;
    let mut attach_in = |mode: AttachMode| xdp.attach_to_if_index(interface.index, mode.aya());
    let (mode, link) = match attach_in(AttachMode::Driver) {
        Ok(link) => (AttachMode::Driver, link),
        // Any driver-mode failure is worth an SKB-mode try: drivers without native XDP
        // answer with different errors (EOPNOTSUPP, EINVAL, ...).
        Err(driver) => match attach_in(AttachMode::Skb) {
            Ok(link) => (AttachMode::Skb, link),
            Err(skb) => {
                return Err(XdpError::Attach {
                    program,
                    interface: interface.to_string(),
                    driver: Box::new(driver),
                    skb: Box::new(skb),
                });
            }
        },
    };
    Ok(Attachment {
        program,
        interface: interface.clone(),
        mode,
        link,
    })
}

/// [`attach`] to the interface named `name`.
pub fn attach_by_name(
    ebpf: &mut Ebpf,
    program: &'static str,
    name: &str,
) -> Result<Attachment, XdpError> {
    attach(ebpf, program, &Interface::by_name(name)?)
}

/// [`attach`] to the interface with index `ifindex`.
pub fn attach_by_index(
    ebpf: &mut Ebpf,
    program: &'static str,
    ifindex: u32,
) -> Result<Attachment, XdpError> {
    attach(ebpf, program, &Interface::by_index(ifindex)?)
}

/// Detaches `attachment`. Succeeds also when the interface is already gone (the kernel
/// dropped the program with it), so a deleted pod veth can be cleaned up afterwards.
pub fn detach(ebpf: &mut Ebpf, attachment: Attachment) -> Result<(), XdpError> {
    let Attachment {
        program,
        interface,
        link,
        ..
    } = attachment;
    let detach_error = |error: ProgramError| XdpError::Detach {
        program,
        interface: interface.to_string(),
        error: Box::new(error),
    };
    program_mut(ebpf, program)?
        .detach(link)
        .map_err(detach_error)
}
