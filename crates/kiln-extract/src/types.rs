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
    Docx,
    Pptx,
    Xlsx,
    Xls,
    Pdf,
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
const DOCUMENT_LIMIT: u64 = 50 * MIB;

macro_rules! types {
    ($( $ext:literal => $mime:literal, $format:ident, $limit:ident; )*) => {
        &[ $( FileType { extension: $ext, mime_type: $mime, format: Format::$format, max_size_bytes: $limit }, )* ]
    };
}

/// Every accepted type.
pub const SUPPORTED_TYPES: &[FileType] = types! {
    "pdf" => "application/pdf", Pdf, DOCUMENT_LIMIT;
    "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document", Docx, DOCUMENT_LIMIT;
    "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation", Pptx, DOCUMENT_LIMIT;
    "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", Xlsx, DOCUMENT_LIMIT;
    "xls" => "application/vnd.ms-excel", Xls, DOCUMENT_LIMIT;
    "txt" => "text/plain", Text, TEXT_LIMIT;
    "text" => "text/plain", Text, TEXT_LIMIT;
    "log" => "text/plain", Text, TEXT_LIMIT;
    "md" => "text/markdown", Markdown, TEXT_LIMIT;
    "markdown" => "text/markdown", Markdown, TEXT_LIMIT;
    "csv" => "text/csv", Csv, TEXT_LIMIT;
    "tsv" => "text/tab-separated-values", Tsv, TEXT_LIMIT;
    "json" => "application/json", Json, TEXT_LIMIT;
    "ndjson" => "application/x-ndjson", Ndjson, TEXT_LIMIT;
    "jsonl" => "application/x-ndjson", Ndjson, TEXT_LIMIT;
    "html" => "text/html", Html, TEXT_LIMIT;
    "htm" => "text/html", Html, TEXT_LIMIT;
    "xml" => "application/xml", Xml, TEXT_LIMIT;
    "yaml" => "application/yaml", Yaml, TEXT_LIMIT;
    "yml" => "application/yaml", Yaml, TEXT_LIMIT;
    "rs" => "text/x-rust", Code, TEXT_LIMIT;
    "py" => "text/x-python", Code, TEXT_LIMIT;
    "js" => "text/javascript", Code, TEXT_LIMIT;
    "mjs" => "text/javascript", Code, TEXT_LIMIT;
    "ts" => "text/x-typescript", Code, TEXT_LIMIT;
    "tsx" => "text/x-typescript", Code, TEXT_LIMIT;
    "jsx" => "text/javascript", Code, TEXT_LIMIT;
    "java" => "text/x-java", Code, TEXT_LIMIT;
    "kt" => "text/x-kotlin", Code, TEXT_LIMIT;
    "scala" => "text/x-scala", Code, TEXT_LIMIT;
    "go" => "text/x-go", Code, TEXT_LIMIT;
    "c" => "text/x-c", Code, TEXT_LIMIT;
    "h" => "text/x-c", Code, TEXT_LIMIT;
    "cc" => "text/x-c++", Code, TEXT_LIMIT;
    "cpp" => "text/x-c++", Code, TEXT_LIMIT;
    "hpp" => "text/x-c++", Code, TEXT_LIMIT;
    "cs" => "text/x-csharp", Code, TEXT_LIMIT;
    "rb" => "text/x-ruby", Code, TEXT_LIMIT;
    "php" => "text/x-php", Code, TEXT_LIMIT;
    "swift" => "text/x-swift", Code, TEXT_LIMIT;
    "sh" => "text/x-shellscript", Code, TEXT_LIMIT;
    "sql" => "text/x-sql", Code, TEXT_LIMIT;
    "css" => "text/css", Code, TEXT_LIMIT;
    "toml" => "application/toml", Code, TEXT_LIMIT;
    "ini" => "text/plain", Code, TEXT_LIMIT;
    // E-mail as it is stored: headers and body as text (MIME parts are not decoded).
    "eml" => "message/rfc822", Text, TEXT_LIMIT;
};

/// Formats recognised by their magic bytes that Kiln does not (yet) read.
fn binary_kind(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
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

const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const OLE_MAGIC: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";

enum ZipKind {
    Office(Format),
    Other(&'static str),
}

/// What a ZIP container holds, told by the part names in its first bytes (local file headers
/// carry names uncompressed).
fn zip_kind(head: &[u8]) -> Option<ZipKind> {
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if has(b"mimetypeapplication/vnd.oasis.opendocument") {
        return Some(ZipKind::Other("an OpenDocument file (.odt, .ods, .odp)"));
    }
    if has(b"mimetypeapplication/epub+zip") {
        return Some(ZipKind::Other("an EPUB book"));
    }
    if has(b"word/") {
        return Some(ZipKind::Office(Format::Docx));
    }
    if has(b"ppt/") {
        return Some(ZipKind::Office(Format::Pptx));
    }
    if has(b"xl/") {
        return Some(ZipKind::Office(Format::Xlsx));
    }
    None
}

fn type_of(format: Format) -> &'static FileType {
    SUPPORTED_TYPES
        .iter()
        .find(|t| t.format == format)
        .expect("every format has a type")
}

fn supported_list() -> String {
    let mut extensions: Vec<&str> = SUPPORTED_TYPES.iter().map(|t| t.extension).collect();
    extensions.dedup();
    extensions.join(", ")
}

/// How many of a file's first bytes [`detect`] needs (more are ignored): uploads keep this
/// much while streaming, the pipeline passes this much of a stored original.
pub const SNIFF_BYTES: usize = 8192;

/// Detects a file's type from its name and its first [`SNIFF_BYTES`] bytes. The error says, in
/// plain words, why the file is refused and what is accepted.
pub fn detect(file_name: &str, head: &[u8]) -> Result<&'static FileType, String> {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    let by_name = SUPPORTED_TYPES.iter().find(|t| t.extension == extension);
    let named_office =
        by_name.filter(|t| matches!(t.format, Format::Docx | Format::Pptx | Format::Xlsx));
    if head.starts_with(ZIP_MAGIC) {
        return match zip_kind(head) {
            Some(ZipKind::Office(format)) => Ok(type_of(format)),
            Some(ZipKind::Other(kind)) => Err(format!(
                "The content is {kind}, which is not supported. Supported types: {}.",
                supported_list()
            )),
            // The parts named in the first bytes did not tell: trust an Office name; the
            // package itself is checked when it is read.
            None => named_office.ok_or_else(|| {
                format!(
                    "The content is a ZIP archive that is not a Word, PowerPoint or Excel document. Supported types: {}.",
                    supported_list()
                )
            }),
        };
    }
    // A PDF reader looks for the header within the first KiB (some writers put bytes
    // before it).
    if head[..head.len().min(1024)]
        .windows(5)
        .any(|w| w == b"%PDF-")
    {
        return Ok(type_of(Format::Pdf));
    }
    if head.starts_with(OLE_MAGIC) {
        // Legacy Excel is read; a password-protected .docx/.pptx/.xlsx is a compound file too,
        // and reading it says so.
        if let Some(xls) = by_name.filter(|t| t.format == Format::Xls) {
            return Ok(xls);
        }
        return named_office.ok_or_else(|| {
            format!(
                "The content is a legacy binary Office document (.doc, .ppt), which is not supported; save it as .docx or .pptx. Supported types: {}.",
                supported_list()
            )
        });
    }
    if let Some(kind) = binary_kind(head) {
        return Err(format!(
            "The content is {kind}, which is not supported. Supported types: {}.",
            supported_list()
        ));
    }
    if let Some(office) = named_office {
        return Err(format!(
            "The file is named '.{}' but its content is not a {} package.",
            office.extension,
            match office.format {
                Format::Docx => "Word",
                Format::Pptx => "PowerPoint",
                _ => "Excel",
            }
        ));
    }
    let file_type = by_name.ok_or_else(|| {
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
        assert_eq!(
            detect("report.txt", b"%PDF-1.7 ...").unwrap().format,
            Format::Pdf
        );
        assert_eq!(
            detect("scan", b"\r\n%PDF-1.4 ...").unwrap().mime_type,
            "application/pdf"
        );
        assert!(
            detect("photo.txt", b"\x89PNG\r\n")
                .unwrap_err()
                .contains("PNG")
        );
        // Office packages are known by their part names, else by their own name.
        assert_eq!(
            detect("x.bin", b"PK\x03\x04\x14\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x13\0\0\0word/document.xml")
                .unwrap()
                .format,
            Format::Docx
        );
        assert_eq!(
            detect("x.pptx", b"PK\x03\x04....").unwrap().format,
            Format::Pptx
        );
        assert!(detect("x.zip", b"PK\x03\x04....").is_err());
        assert_eq!(
            detect("book.bin", b"PK\x03\x04 ... xl/workbook.xml")
                .unwrap()
                .format,
            Format::Xlsx
        );
        assert_eq!(
            detect("old.xls", b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1")
                .unwrap()
                .format,
            Format::Xls
        );
        assert!(
            detect(
                "x.docx",
                b"PK\x03\x04 mimetypeapplication/vnd.oasis.opendocument.text"
            )
            .unwrap_err()
            .contains("OpenDocument")
        );
        assert!(
            detect("x.docx", b"plain words")
                .unwrap_err()
                .contains("Word")
        );
        // A password-protected .docx is a compound file: accepted, its reading says why not.
        assert_eq!(
            detect("x.docx", b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1")
                .unwrap()
                .format,
            Format::Docx
        );
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
