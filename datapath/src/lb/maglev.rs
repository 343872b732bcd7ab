//! WIP STUB (replaced by the real Maglev module on merge): same API, modulo fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    n: usize,
}
#[derive(Debug)]
pub struct MaglevError;
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
pub const DEFAULT_SEED: u64 = 0;
pub fn valid_table_size(m: u32) -> bool {
    m >= 251
}
pub fn backend_key(ip: crate::addr::IpKey, port: u16) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..16].copy_from_slice(&ip.0);
    k[16..].copy_from_slice(&port.to_be_bytes());
    k
}
impl MaglevTable {
    pub fn build(keys: &[&[u8]], _w: Option<&[u32]>, _size: u32, _seed: u64) -> Result<MaglevTable, MaglevError> {
        Ok(MaglevTable { n: keys.len() })
    }
    pub fn lookup(&self, h: u32) -> Option<usize> {
        (self.n > 0).then(|| h as usize % self.n)
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}
