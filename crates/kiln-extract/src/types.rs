//! The file types Kiln accepts (contract §8) and detection from content plus name.

use serde::Serialize;

use crate::decode::decode_text;

/// How a type's text is extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Text,
    Markdown,
    Html,
    Csv,
    Tsv,
    Json,
    Ndjson,
    Xml,
    Yaml,
    Code,
}

/// An accepted type: extension, MIME type, extraction format and size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileType {
    pub extension: &'static str,
    pub mime_type: &'static str,
    #[serde(skip)]
    pub format: Format,
    pub max_size_bytes: u64,
}

const MIB: u64 = 1024 * 1024;
const TEXT_LIMIT: u64 = 10 * MIB;

macro_rules! types {
    ($( $ext:literal => $mime:literal, $format:ident; )*) => {
        &[ $( FileType { extension: $ext, mime_type: $mime, format: Format::$format, max_size_bytes: TEXT_LIMIT }, )* ]
    };
}

/// Every accepted type. PDF and Office formats come with their extractors.
pub const SUPPORTED_TYPES: &[FileType] = types! {
    "txt" => "text/plain", Text;
    "text" => "text/plain", Text;
    "log" => "text/plain", Text;
    "md" => "text/markdown", Markdown;
    "markdown" => "text/markdown", Markdown;
    "csv" => "text/csv", Csv;
    "tsv" => "text/tab-separated-values", Tsv;
    "json" => "application/json", Json;
    "ndjson" => "application/x-ndjson", Ndjson;
    "jsonl" => "application/x-ndjson", Ndjson;
    "html" => "text/html", Html;
    "htm" => "text/html", Html;
    "xml" => "application/xml", Xml;
    "yaml" => "application/yaml", Yaml;
    "yml" => "application/yaml", Yaml;
    "rs" => "text/x-rust", Code;
    "py" => "text/x-python", Code;
    "js" => "text/javascript", Code;
    "mjs" => "text/javascript", Code;
    "ts" => "text/x-typescript", Code;
    "tsx" => "text/x-typescript", Code;
    "jsx" => "text/javascript", Code;
    "java" => "text/x-java", Code;
    "kt" => "text/x-kotlin", Code;
    "scala" => "text/x-scala", Code;
    "go" => "text/x-go", Code;
    "c" => "text/x-c", Code;
    "h" => "text/x-c", Code;
    "cc" => "text/x-c++", Code;
    "cpp" => "text/x-c++", Code;
    "hpp" => "text/x-c++", Code;
    "cs" => "text/x-csharp", Code;
    "rb" => "text/x-ruby", Code;
    "php" => "text/x-php", Code;
    "swift" => "text/x-swift", Code;
    "sh" => "text/x-shellscript", Code;
    "sql" => "text/x-sql", Code;
    "css" => "text/css", Code;
    "toml" => "application/toml", Code;
    "ini" => "text/plain", Code;
};

/// Formats recognised by their magic bytes that Kiln does not (yet) read.
fn binary_kind(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"%PDF-", "PDF"),
        (
            b"PK\x03\x04",
            "a ZIP container (Office, OpenDocument or EPUB)",
        ),
        (
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
            "a legacy Office (OLE) document",
        ),
        (b"{\\rtf", "RTF"),
        (b"\x89PNG", "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"\x7FELF", "an executable"),
        (b"%!PS", "PostScript"),
    ];
    MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, name)| *name)
}

fn supported_list() -> String {
    let mut extensions: Vec<&str> = SUPPORTED_TYPES.iter().map(|t| t.extension).collect();
    extensions.dedup();
    extensions.join(", ")
}

/// Detects a file's type from its name and its first bytes. The error says, in plain words,
/// why the file is refused and what is accepted.
pub fn detect(file_name: &str, head: &[u8]) -> Result<&'static FileType, String> {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    if let Some(kind) = binary_kind(head) {
        return Err(format!(
            "The content is {kind}, which is not supported. Supported types: {}.",
            supported_list()
        ));
    }
    let file_type = SUPPORTED_TYPES
        .iter()
        .find(|t| t.extension == extension)
        .ok_or_else(|| {
            format!(
                "Files of type '.{extension}' are not supported. Supported types: {}.",
                supported_list()
            )
        })?;
    if !head.is_empty() && decode_text(head).is_none() {
        return Err(format!(
            "The file is named '.{extension}' but its content is not text in any encoding Kiln reads."
        ));
    }
    Ok(file_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides_over_the_name() {
        assert_eq!(detect("a.txt", b"hello").unwrap().format, Format::Text);
        assert_eq!(
            detect("A.MD", b"# Title").unwrap().mime_type,
            "text/markdown"
        );
        assert!(
            detect("report.txt", b"%PDF-1.7 ...")
                .unwrap_err()
                .contains("PDF")
        );
        assert!(detect("x.docx", b"PK\x03\x04....").is_err());
        assert!(
            detect("x.doc", b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1")
                .unwrap_err()
                .contains("legacy")
        );
        assert!(
            detect("x.exe", b"MZ")
                .unwrap_err()
                .contains("Supported types")
        );
        let garbage: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        assert!(
            detect("data.txt", &garbage)
                .unwrap_err()
                .contains("not text")
        );
        assert!(detect("empty.txt", b"").is_ok());
    }
}
