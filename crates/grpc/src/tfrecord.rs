//! TensorFlow's TFRecord file format (uncompressed), as `tf.io.TFRecordWriter` writes it:
//! per record a little-endian `u64` length, the masked CRC-32C of those 8 bytes, the data,
//! and the masked CRC-32C of the data.

/// The records of `bytes`, each checked against its checksums. Errors name the record
/// (1-based) and what is wrong with it; `max` records at most.
pub(crate) fn records(bytes: &[u8], max: usize) -> Result<Vec<&[u8]>, String> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = records.len() + 1;
        if n > max {
            return Err(format!("more than {max} records"));
        }
        let truncated = || format!("record {n} is truncated");
        let header = rest.get(..12).ok_or_else(truncated)?;
        let (length, length_crc) = header.split_at(8);
        if masked_crc32c(length) != u32::from_le_bytes(length_crc.try_into().expect("4 bytes")) {
            return Err(format!("record {n}: its length fails its checksum"));
        }
        let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
        let length = usize::try_from(length).map_err(|_| truncated())?;
        let end = length.checked_add(16).ok_or_else(truncated)?;
        let record = rest.get(..end).ok_or_else(truncated)?;
        let (data, data_crc) = record[12..].split_at(length);
        if masked_crc32c(data) != u32::from_le_bytes(data_crc.try_into().expect("4 bytes")) {
            return Err(format!("record {n}: its data fails its checksum"));
        }
        records.push(data);
        rest = &rest[end..];
    }
    Ok(records)
}

/// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data holding CRCs
/// stays well distributed (TensorFlow's `crc32c::Mask`).
fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli), bit-reflected, one table lookup per byte: warm-up files are small.
fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &[u8]) -> Vec<u8> {
        let length = (data.len() as u64).to_le_bytes();
        let mut out = length.to_vec();
        out.extend(masked_crc32c(&length).to_le_bytes());
        out.extend(data);
        out.extend(masked_crc32c(data).to_le_bytes());
        out
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The check value of CRC-32C (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn reads_records_back_and_names_the_bad_one() {
        let mut file = record(b"first");
        file.extend(record(b""));
        file.extend(record(b"third"));
        assert_eq!(
            records(&file, 10).unwrap(),
            vec![&b"first"[..], b"", b"third"]
        );
        assert_eq!(records(&file, 2).unwrap_err(), "more than 2 records");

        let mut corrupt = file.clone();
        let last = corrupt.len() - 6;
        corrupt[last] ^= 1;
        assert_eq!(
            records(&corrupt, 10).unwrap_err(),
            "record 3: its data fails its checksum"
        );
        let mut corrupt = file.clone();
        corrupt[0] ^= 1;
        assert_eq!(
            records(&corrupt, 10).unwrap_err(),
            "record 1: its length fails its checksum"
        );
        assert_eq!(
            records(&file[..file.len() - 1], 10).unwrap_err(),
            "record 3 is truncated"
        );
        assert_eq!(
            records(&file[..5], 10).unwrap_err(),
            "record 1 is truncated"
        );
    }
}
