//! Per-format extraction of text formats.

use crate::decode::decode_text;
use crate::{Document, ExtractError, Format, Section, SectionKind};

pub(crate) fn extract(format: Format, bytes: &[u8]) -> Result<Document, ExtractError> {
    match format {
        Format::Docx => return crate::office::docx(bytes),
        Format::Pptx => return crate::office::pptx(bytes),
        Format::Xlsx => return crate::office::spreadsheet(bytes, false),
        Format::Xls => return crate::office::spreadsheet(bytes, true),
        _ => {}
    }
    let text = decode_text(bytes).ok_or_else(|| {
        ExtractError::Corrupt("The content is not text in any encoding Kiln reads.".into())
    })?;
    let text = text.replace("\r\n", "\n");
    let sections = match format {
        Format::Text | Format::Yaml => vec![section(None, SectionKind::Prose, text)],
        Format::Markdown => vec![section(None, SectionKind::Markdown, text)],
        Format::Code => vec![section(None, SectionKind::Code, text)],
        Format::Html => html(&text),
        Format::Csv => rows(&text, b',')?,
        Format::Tsv => rows(&text, b'\t')?,
        Format::Json => vec![section(None, SectionKind::Prose, json(&text)?)],
        Format::Ndjson => vec![section(None, SectionKind::Prose, ndjson(&text)?)],
        Format::Xml => vec![section(None, SectionKind::Prose, xml(&text)?)],
        Format::Docx | Format::Pptx | Format::Xlsx | Format::Xls => unreachable!("handled above"),
    };
    Ok(Document { sections })
}

fn section(title: Option<String>, kind: SectionKind, text: String) -> Section {
    Section {
        title,
        page: None,
        kind,
        text,
    }
}

/// Visible text only: no scripts, styles or other invisible elements; blocks become lines.
fn html(text: &str) -> Vec<Section> {
    let dom = match tl::parse(text, tl::ParserOptions::default()) {
        Ok(dom) => dom,
        Err(_) => return vec![section(None, SectionKind::Prose, String::new())],
    };
    let parser = dom.parser();
    let mut out = String::new();
    let title = dom
        .query_selector("title")
        .and_then(|mut found| found.next())
        .and_then(|handle| handle.get(parser))
        .map(|node| decode_entities(&node.inner_text(parser)).trim().to_string())
        .filter(|t| !t.is_empty());
    for node in dom.children() {
        walk(*node, parser, &mut out);
    }
    let cleaned = collapse_blank_lines(&out);
    vec![section(title, SectionKind::Prose, cleaned)]
}

const INVISIBLE: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas",
];
const BLOCK: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "table",
    "ul",
    "ol",
    "pre",
    "blockquote",
    "hr",
    "dt",
    "dd",
    "main",
    "nav",
    "aside",
    "figure",
    "figcaption",
    "address",
    "body",
    "html",
];

fn walk(handle: tl::NodeHandle, parser: &tl::Parser, out: &mut String) {
    let Some(node) = handle.get(parser) else {
        return;
    };
    match node {
        tl::Node::Tag(tag) => {
            let name = tag.name().as_utf8_str().to_ascii_lowercase();
            if INVISIBLE.contains(&name.as_str()) {
                return;
            }
            let block = BLOCK.contains(&name.as_str());
            if block {
                out.push('\n');
            }
            if name == "td" || name == "th" {
                out.push(' ');
            }
            for child in tag.children().top().iter() {
                walk(*child, parser, out);
            }
            if block {
                out.push('\n');
            }
        }
        tl::Node::Raw(raw) => {
            let text = decode_entities(&raw.as_utf8_str());
            let mut last_space = out.ends_with(char::is_whitespace);
            for c in text.chars() {
                if c.is_whitespace() {
                    if !last_space {
                        out.push(' ');
                        last_space = true;
                    }
                } else {
                    out.push(c);
                    last_space = false;
                }
            }
        }
        tl::Node::Comment(_) => {}
    }
}

/// The HTML entities common in real documents, and numeric ones.
pub(crate) fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                "mdash" => Some('—'),
                "ndash" => Some('–'),
                "hellip" => Some('…'),
                "copy" => Some('©'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        out.push_str(line);
        blank = 0;
    }
    out
}

/// CSV/TSV: rows as `header: value` pairs would lose the table's shape; instead every row
/// stays a line and the chunker repeats the header line at the top of every chunk. The
/// delimiter is sniffed among `,` `;` `\t` `|` when the declared one yields one column.
fn rows(text: &str, declared: u8) -> Result<Vec<Section>, ExtractError> {
    let delimiter = [declared, b';', b'\t', b'|', b',']
        .into_iter()
        .find(|&d| {
            text.lines()
                .next()
                .is_some_and(|first| first.as_bytes().contains(&d))
        })
        .unwrap_or(declared);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut lines = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| ExtractError::Corrupt(format!("Unreadable table row: {e}")))?;
        let cells: Vec<&str> = record.iter().map(str::trim).collect();
        if cells.iter().all(|c| c.is_empty()) {
            continue;
        }
        lines.push(cells.join(" | "));
    }
    let mut lines = lines.into_iter();
    let Some(header) = lines.next() else {
        return Ok(vec![section(None, SectionKind::Prose, String::new())]);
    };
    let body: Vec<String> = lines.collect();
    if body.is_empty() {
        return Ok(vec![section(None, SectionKind::Prose, header)]);
    }
    Ok(vec![section(
        None,
        SectionKind::Rows { header },
        body.join("\n"),
    )])
}

/// JSON as readable lines: `path.to.key: value`, one per scalar.
fn json(text: &str) -> Result<String, ExtractError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ExtractError::Corrupt(format!("The JSON is malformed: {e}")))?;
    let mut out = String::new();
    flatten(&value, &mut String::new(), &mut out);
    Ok(out)
}

fn ndjson(text: &str) -> Result<String, ExtractError> {
    let mut out = String::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| ExtractError::Corrupt(format!("Line {} is not valid JSON: {e}", n + 1)))?;
        flatten(&value, &mut String::new(), &mut out);
        out.push('\n');
    }
    Ok(out)
}

fn flatten(value: &serde_json::Value, path: &mut String, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                flatten(child, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for child in items {
                flatten(child, path, out);
            }
        }
        Value::Null => {}
        scalar => {
            let text = match scalar {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if path.is_empty() {
                out.push_str(&text);
            } else {
                out.push_str(path);
                out.push_str(": ");
                out.push_str(&text);
            }
            out.push('\n');
        }
    }
}

/// XML: the text and CDATA of every element, one element per line.
fn xml(text: &str) -> Result<String, ExtractError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut out = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Text(t)) => out.push_str(&t.xml10_content()),
            Ok(Event::End(_)) => out.push('\n'),
            Ok(Event::GeneralRef(r)) => {
                let name: &str = r.as_ref();
                out.push_str(&decode_entities(&format!("&{name};")));
            }
            Ok(Event::CData(c)) => {
                out.push_str(&c.xml10_content());
                out.push('\n');
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(ExtractError::Corrupt(format!(
                    "The XML is malformed at byte {}: {e}",
                    reader.error_position()
                )));
            }
        }
    }
    Ok(collapse_blank_lines(&out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract;

    fn text_of(format: Format, input: &str) -> String {
        extract(format, input.as_bytes())
            .unwrap()
            .sections
            .iter()
            .map(|s| s.text.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn html_keeps_visible_text_only() {
        let html = "<html><head><title>T &amp; C</title><style>p{color:red}</style>\
                    <script>var secret = 1;</script></head><body><h1>Hello</h1>\
                    <p>World &mdash; of <b>bold</b>&nbsp;text</p><noscript>no</noscript>\
                    <table><tr><td>a</td><td>b</td></tr></table></body></html>";
        let doc = extract(Format::Html, html.as_bytes()).unwrap();
        assert_eq!(doc.sections[0].title.as_deref(), Some("T & C"));
        let text = &doc.sections[0].text;
        assert!(text.contains("Hello"));
        assert!(text.contains("World — of bold text"), "{text}");
        assert!(text.contains("a"), "{text}");
        assert!(
            !text.contains("secret") && !text.contains("color") && !text.contains("no\n"),
            "{text}"
        );
    }

    #[test]
    fn csv_rows_keep_their_header() {
        let doc = extract(Format::Csv, b"name,team\nAda,\"Core, infra\"\nLin,API\n").unwrap();
        assert_eq!(
            doc.sections[0].kind,
            SectionKind::Rows {
                header: "name | team".into()
            }
        );
        assert_eq!(doc.sections[0].text, "Ada | Core, infra\nLin | API");
        let doc = extract(Format::Csv, b"a;b\n1;2\n").unwrap();
        assert_eq!(doc.sections[0].text, "1 | 2");
        let doc = extract(Format::Tsv, b"a\tb\r\n1\t2\r\n").unwrap();
        assert_eq!(doc.sections[0].text, "1 | 2");
    }

    #[test]
    fn json_ndjson_xml_and_yaml() {
        let text = text_of(
            Format::Json,
            r#"{"title": "Kiln", "tags": ["a", "b"], "n": {"x": 1}}"#,
        );
        assert!(
            text.contains("title: Kiln") && text.contains("tags: b") && text.contains("n.x: 1"),
            "{text}"
        );
        assert!(matches!(
            extract(Format::Json, b"{\"a\": "),
            Err(ExtractError::Corrupt(_))
        ));
        let text = text_of(Format::Ndjson, "{\"a\": 1}\n{\"a\": 2}\n");
        assert!(text.contains("a: 1") && text.contains("a: 2"));
        assert!(matches!(
            extract(Format::Ndjson, b"{\"a\": 1}\nnot json\n"),
            Err(ExtractError::Corrupt(_))
        ));
        let text = text_of(Format::Xml, "<a><b>one &amp; two</b><![CDATA[three]]></a>");
        assert!(
            text.contains("one & two") && text.contains("three"),
            "{text}"
        );
        assert!(matches!(
            extract(Format::Xml, b"<a><b></a>"),
            Err(ExtractError::Corrupt(_))
        ));
        assert!(text_of(Format::Yaml, "key: value\n").contains("key: value"));
    }

    #[test]
    fn whitespace_only_is_no_text() {
        assert_eq!(extract(Format::Text, b" \n\t "), Err(ExtractError::NoText));
        assert_eq!(extract(Format::Text, b""), Err(ExtractError::NoText));
        assert_eq!(
            extract(Format::Html, b"<html><script>x</script></html>"),
            Err(ExtractError::NoText)
        );
    }
}
