//! Container checks GStreamer does not make: a truncated MP4 ends with a plain EOS (no
//! error), so after a file's end the capture walks its top-level ISO BMFF boxes and reports a
//! box that runs past the end of the file (truncated) or has an impossible size (corrupt).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// For an ISO base media file (MP4, MOV, M4A: starts with an `ftyp` box), says whether a
/// top-level box claims more bytes than the file has, i.e. the file was cut short.
pub fn iso_bmff_truncation(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut offset = 0u64;
    let mut first = true;
    while offset + 8 <= len {
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut header[..8]).ok()?;
        let kind = String::from_utf8_lossy(&header[4..8]).into_owned();
        if first && kind != "ftyp" {
            return None;
        }
        first = false;
        let mut size = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        if size == 1 {
            file.read_exact(&mut header[8..16]).ok()?;
            size = u64::from_be_bytes(header[8..16].try_into().ok()?);
        } else if size == 0 {
            return None; // the box runs to the end of the file by definition
        }
        if size < 8 {
            return Some(format!(
                "the file is corrupt: box '{kind}' at byte {offset} has size {size}"
            ));
        }
        if offset + size > len {
            return Some(format!(
                "the file is truncated: box '{kind}' needs {} bytes past byte {offset}, the file ends after {len}",
                size
            ));
        }
        offset += size;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A box: 32-bit size, kind, `body` bytes (size as given, or the real one).
    fn boxed(kind: &[u8; 4], body: usize, size: Option<u32>) -> Vec<u8> {
        let size = size.unwrap_or(8 + body as u32);
        let mut b = size.to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.resize(8 + body, 0);
        b
    }

    fn check(name: &str, bytes: &[u8]) -> Option<String> {
        let path = std::env::temp_dir().join(format!("afs-mp4-{name}-{}.mp4", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let result = iso_bmff_truncation(&path);
        std::fs::remove_file(&path).ok();
        result
    }

    #[test]
    fn a_whole_file_passes() {
        let mut file = boxed(b"ftyp", 16, None);
        file.extend(boxed(b"moov", 100, None));
        file.extend(boxed(b"mdat", 1000, None));
        assert_eq!(check("whole", &file), None);
    }

    #[test]
    fn a_box_past_the_end_is_a_truncation_naming_it() {
        let mut file = boxed(b"ftyp", 16, None);
        file.extend(boxed(b"moov", 100, None));
        let mut mdat = boxed(b"mdat", 1000, None);
        mdat.truncate(500);
        file.extend(mdat);
        let problem = check("cut", &file).unwrap();
        assert!(problem.starts_with("the file is truncated"), "{problem}");
        assert!(
            problem.contains("box 'mdat' needs 1008 bytes past byte 132"),
            "{problem}"
        );
    }

    #[test]
    fn a_64_bit_size_is_read_and_an_impossible_size_is_corruption() {
        let mut file = boxed(b"ftyp", 8, None);
        // size 1: the real size follows as 64 bits.
        let mut large = 1u32.to_be_bytes().to_vec();
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&(1u64 << 33).to_be_bytes());
        file.extend(large);
        let problem = check("large", &file).unwrap();
        assert!(problem.contains("needs 8589934592 bytes"), "{problem}");

        let mut corrupt = boxed(b"ftyp", 8, None);
        corrupt.extend(boxed(b"free", 8, Some(4)));
        let problem = check("corrupt", &corrupt).unwrap();
        assert!(
            problem.starts_with("the file is corrupt: box 'free' at byte 16 has size 4"),
            "{problem}"
        );
    }

    #[test]
    fn other_files_and_a_box_to_the_end_are_not_judged() {
        assert_eq!(check("riff", b"RIFF\0\0\0\0WAVEfmt "), None);
        let mut open_ended = boxed(b"ftyp", 8, None);
        open_ended.extend(boxed(b"mdat", 10, Some(0)));
        assert_eq!(check("open", &open_ended), None);
        assert_eq!(
            iso_bmff_truncation(Path::new("/nonexistent/afs/clip.mp4")),
            None
        );
    }
}
