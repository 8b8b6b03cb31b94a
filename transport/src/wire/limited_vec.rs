//! A postcard output flavor that refuses to grow past a limit, so encoding an
//! oversized message stops early instead of allocating it whole.

use postcard::ser_flavors::Flavor;

/// Growable output that fails with `SerializeBufferFull` once it would exceed
/// `max_len` bytes.
pub(crate) struct LimitedVec {
    pub(crate) bytes: Vec<u8>,
    pub(crate) max_len: usize,
}

impl Flavor for LimitedVec {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.bytes.len().saturating_add(data.len()) > self.max_len {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.bytes.len() >= self.max_len {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.bytes.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.bytes)
    }
}
