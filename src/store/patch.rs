//! The payload of a `Form::Patched` record: the bytes to put back into a block's normalized form (the
//! hash parts `import::normalize` took out before chunking). Reads apply it; the NAR pipeline encodes it.

/// Encode patches as a record payload: `count u32`, then per patch `offset u32 | len u8 | bytes`.
pub fn encode_patches(patches: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = (patches.len() as u32).to_le_bytes().to_vec();
    for (off, bytes) in patches {
        out.extend_from_slice(&off.to_le_bytes());
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out
}

/// Put the patches of `payload` back into `block` (the normalized bytes); errors say what is malformed.
pub fn apply_patches(block: &mut [u8], payload: &[u8]) -> Result<(), String> {
    let take = |p: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        if p.len() < n {
            return Err("patch list is truncated".into());
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a.to_vec())
    };
    let mut p = payload;
    let n = u32::from_le_bytes(take(&mut p, 4)?.try_into().map_err(|_| "patch count")?);
    for _ in 0..n {
        let off = u32::from_le_bytes(take(&mut p, 4)?.try_into().map_err(|_| "patch offset")?) as usize;
        let len = take(&mut p, 1)?[0] as usize;
        let bytes = take(&mut p, len)?;
        let dst =
            block.get_mut(off..off + len).ok_or_else(|| format!("patch at {off}+{len} lies outside the block"))?;
        dst.copy_from_slice(&bytes);
    }
    if !p.is_empty() {
        return Err(format!("{} bytes after the last patch", p.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_patch_lists_are_errors() {
        let mut b = vec![0u8; 10];
        assert!(apply_patches(&mut b, &[1, 0, 0]).is_err());
        assert!(apply_patches(&mut b, &encode_patches(&[(8, vec![1, 2, 3])])).is_err());
        let mut ok = encode_patches(&[(0, vec![1])]);
        ok.push(0);
        assert!(apply_patches(&mut b, &ok).is_err());
    }
}
