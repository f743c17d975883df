//! What to fetch: the files a source lists, with what the source says about them, and the
//! pure rules that pick and check them (include globs, safe paths, checksums from ETags).

use std::path::{Component, Path, PathBuf};

/// Files taken from a hub repository when no `--include` is given: what `serve` loads.
pub const DEFAULT_HUB_INCLUDE: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer*.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "*.gguf",
];

/// One file of a model, as its source lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path relative to the destination, `/`-separated; checked by [`safe_relative_path`].
    pub path: String,
    /// Size in bytes, where the listing gives it.
    pub size: Option<u64>,
    /// Lower-case hex sha256, where the listing gives it.
    pub sha256: Option<String>,
    /// Lower-case hex git blob id (sha1 of `blob <size>\0` and the content), where the
    /// listing gives one for the file's content: the hub's non-LFS files.
    pub git_blob_sha1: Option<String>,
    /// Where the transport reads it from.
    pub location: Location,
}

/// How a transport reaches a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Url(String),
    Local(PathBuf),
    /// An object key, with the ETag it had when listed (every ranged read must match it).
    Object {
        key: String,
        etag: Option<String>,
    },
}

/// `path` as a relative path that stays inside the destination, or `None` if it is absolute,
/// climbs with `..`, or has empty or `.` components.
pub fn safe_relative_path(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\\') || path.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return None;
        }
        out.push(segment);
    }
    // Belt and braces: the platform's own reading agrees it is a plain relative path.
    Path::new(&out)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(out)
}

/// Whether `path` matches any of `patterns`; no patterns match everything.
pub fn included(path: &str, patterns: &[String]) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob_match(p, path))
}

/// Glob match over `/`-separated paths: `*` matches within one path segment, `**` across
/// segments, `?` one character other than `/`. So `*.safetensors` takes top-level files only
/// and `**/*.safetensors` takes them at any depth.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                let rest = &rest[1..];
                // `**/` also matches no directory at all.
                if let Some(after) = rest.strip_prefix(b"/")
                    && go(after, s)
                {
                    return true;
                }
                (0..=s.len()).any(|i| go(rest, &s[i..]))
            }
            Some((b'*', rest)) => {
                let segment_end = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
                (0..=segment_end).any(|i| go(rest, &s[i..]))
            }
            Some((b'?', rest)) => s.first().is_some_and(|&c| c != b'/') && go(rest, &s[1..]),
            Some((&c, rest)) => s.first() == Some(&c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

/// The sha256 an ETag carries, if it is one: the hub's `X-Linked-Etag` (and `ETag`) for LFS
/// files is the file's sha256 in quotes. Git blob ids (40 hex) and S3's MD5 ETags are not.
pub fn sha256_from_etag(etag: &str) -> Option<String> {
    let value = etag.trim().trim_start_matches("W/").trim_matches('"');
    is_sha256_hex(value).then(|| value.to_ascii_lowercase())
}

pub fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A git object id: 40 hex digits (sha1), as git names commits and blobs.
pub fn is_git_object_id(value: &str) -> bool {
    value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A hasher for a git blob id of `size` bytes: git hashes a header before the content.
pub fn git_blob_hasher(size: u64) -> sha1::Sha1 {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {size}\0").as_bytes());
    hasher
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters stay as they are).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a `/`-separated path, keeping the separators.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths_stay_inside_the_destination() {
        assert_eq!(
            safe_relative_path("config.json"),
            Some(PathBuf::from("config.json"))
        );
        assert_eq!(
            safe_relative_path("onnx/model.onnx"),
            Some(PathBuf::from("onnx/model.onnx"))
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "a\\..\\b",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn default_hub_globs_take_what_serve_loads() {
        let include: Vec<String> = DEFAULT_HUB_INCLUDE.iter().map(|s| s.to_string()).collect();
        for yes in [
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "smollm2.Q4_1.gguf",
        ] {
            assert!(included(yes, &include), "{yes}");
        }
        for no in [
            "README.md",
            ".gitattributes",
            "pytorch_model.bin",
            "onnx/model.safetensors",
            "vocab.txt",
        ] {
            assert!(!included(no, &include), "{no}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "a.txt"));
        assert!(!glob_match("*", "dir/a.txt"));
        assert!(glob_match("**", "dir/a.txt"));
        assert!(glob_match("**/*.txt", "a.txt"));
        assert!(glob_match("**/*.txt", "x/y/a.txt"));
        assert!(glob_match("dir/*", "dir/a"));
        assert!(!glob_match("dir/*", "dir/a/b"));
        assert!(glob_match(
            "model-?????-of-*.safetensors",
            "model-00001-of-00004.safetensors"
        ));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(included("anything", &[]));
    }

    #[test]
    fn etags_carry_sha256_only_when_they_are_one() {
        let sha = "A".repeat(64);
        assert_eq!(
            sha256_from_etag(&format!("\"{sha}\"")),
            Some("a".repeat(64))
        );
        assert_eq!(
            sha256_from_etag(&format!("W/\"{}\"", "b".repeat(64))),
            Some("b".repeat(64))
        );
        assert_eq!(
            sha256_from_etag("\"0123456789abcdef0123456789abcdef01234567\""),
            None
        );
        assert_eq!(
            sha256_from_etag("\"9e107d9d372bb6826bd81d3542a419d6\""),
            None
        );
        assert_eq!(sha256_from_etag(&format!("\"{}-3\"", "c".repeat(62))), None);
    }

    #[test]
    fn hex_and_url_encoding() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_path("dir/a b.json"), "dir/a%20b.json");
    }
}
