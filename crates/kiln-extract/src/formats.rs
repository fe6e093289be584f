//! Per-format extraction of text formats.

use crate::decode::decode_text;
use crate::{Document, ExtractError, Format, Section, SectionKind};

pub(crate) fn extract(format: Format, bytes: &[u8]) -> Result<Document, ExtractError> {
    match format {
        Format::Docx => return crate::office::docx(bytes),
        Format::Pptx => return crate::office::pptx(bytes),
        Format::Xlsx => return crate::office::spreadsheet(bytes, false),
        Format::Xls => return crate::office::spreadsheet(bytes, true),
        Format::Pdf => return crate::pdf::pdf(bytes),
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
        Format::Json | Format::Ndjson => vec![section(None, SectionKind::Prose, json(&text)?)],
        Format::Xml => vec![section(None, SectionKind::Prose, xml(&text)?)],
        Format::Docx | Format::Pptx | Format::Xlsx | Format::Xls | Format::Pdf => {
            unreachable!("handled above")
        }
    };
    Ok(Document {
        sections,
        pages: None,
        extractor: 0,
    })
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
    let text = without_raw_text_elements(text);
    let dom = match tl::parse(&text, tl::ParserOptions::default()) {
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
    let mut cleaned = collapse_blank_lines(&out);
    // The title is what a reader sees first (tab, search result), so it is text too.
    if let Some(title) = &title
        && !cleaned.trim_start().starts_with(title.as_str())
    {
        cleaned = format!("{title}\n\n{}", cleaned.trim_start());
    }
    vec![section(title, SectionKind::Prose, cleaned)]
}

/// Removes `<script>` and `<style>` elements before parsing. Their content is raw text that
/// ends only at the matching end tag (HTML's tokenizer rule), but the DOM parser reads tags
/// inside it (`document.write("<meta …")`), which can swallow the rest of the page.
fn without_raw_text_elements(html: &str) -> std::borrow::Cow<'_, str> {
    const RAW: [&str; 2] = ["script", "style"];
    let lower = html.to_ascii_lowercase();
    let opens = |at: usize| {
        RAW.into_iter().find(|name| {
            lower[at + 1..].starts_with(name)
                && lower[at + 1 + name.len()..]
                    .starts_with(|c: char| c == '>' || c == '/' || c.is_ascii_whitespace())
        })
    };
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find('<') {
        let at = search + found;
        let Some(name) = opens(at) else {
            search = at + 1;
            continue;
        };
        let end_tag = format!("</{name}");
        let end = lower[at..]
            .find(&end_tag)
            .map(|e| {
                let close = at + e + end_tag.len();
                lower[close..]
                    .find('>')
                    .map_or(lower.len(), |g| close + g + 1)
            })
            .unwrap_or(lower.len());
        out.push_str(&html[copied..at]);
        copied = end;
        search = end;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(html);
    }
    out.push_str(&html[copied..]);
    std::borrow::Cow::Owned(out)
}

/// Elements whose content is not shown. `head` is not among them: a stray unclosed tag in it
/// makes the parser nest the whole body inside; its own children (`meta`, `link`) hold no text
/// and its `title` is taken separately.
const INVISIBLE: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "title", "iframe", "object", "canvas",
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

/// JSON as readable lines, `path.to.key: value`, one per scalar, in the document's key order.
/// JSON, NDJSON, or values one after another (a `.json` file is often NDJSON): every
/// top-level value, and every item of a top-level array, is a record; records are paragraphs.
fn json(text: &str) -> Result<String, ExtractError> {
    let mut out = String::new();
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    for value in values.by_ref() {
        let value =
            value.map_err(|e| ExtractError::Corrupt(format!("The JSON is malformed: {e}")))?;
        let records = match &value {
            serde_json::Value::Array(items) => items.as_slice(),
            single => std::slice::from_ref(single),
        };
        for record in records {
            flatten(record, &mut String::new(), &mut out);
            out.push('\n');
        }
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
    fn html_script_content_is_not_parsed_as_tags() {
        // A script that writes tags, and a head with an unclosed element: neither may hide
        // the body.
        let html = "<html><head><title>Page</title><META name=x><script>document.write('<meta \
                    name=\"a\"><div>');</script><STYLE>p{}</STYLE></head>\
                    <body><p>Visible body</p><script type=x>if (a<b) { c() }</SCRIPT >\
                    <p>after</p></body></html>";
        let doc = extract(Format::Html, html.as_bytes()).unwrap();
        assert_eq!(doc.sections[0].text, "Page\n\nVisible body\n\nafter");
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
        // The document's own key order.
        assert_eq!(text, "title: Kiln\ntags: a\ntags: b\nn.x: 1\n\n");
        // Records of a top-level array, and values one after another, are paragraphs.
        let records = "id: 1\nname: x\n\nid: 2\nname: y\n\n";
        assert_eq!(
            text_of(
                Format::Json,
                r#"[{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]"#
            ),
            records
        );
        assert_eq!(
            text_of(
                Format::Json,
                "{\"id\": 1,\n \"name\": \"x\"}\n{\"id\": 2, \"name\": \"y\"}"
            ),
            records
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
