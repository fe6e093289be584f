//! Word (DOCX) and PowerPoint (PPTX): ZIP packages of XML parts, read with `zip` and
//! `quick-xml`; Excel (XLSX, Strict OOXML, legacy XLS) with `calamine`. All within fixed bounds, so a zip bomb or absurdly nested XML fails as
//! `Corrupt` in bounded memory and time.

use std::io::{Cursor, Read};

use quick_xml::events::Event;

use crate::{Document, ExtractError, Section, SectionKind};

/// Largest inflated size of one XML part.
const MAX_PART_BYTES: u64 = 64 * 1024 * 1024;
/// Largest inflated size of all parts read from one file.
const MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;
/// Deepest XML nesting accepted (real documents stay far below).
const MAX_DEPTH: usize = 256;
/// A compound-file (OLE) header: what a password-protected Office file is.
const OLE_MAGIC: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";

fn corrupt(message: impl Into<String>) -> ExtractError {
    ExtractError::Corrupt(message.into())
}

/// Whether `bytes` are a compound (OLE) file holding an `EncryptedPackage` stream: how Office
/// stores a password-protected .docx/.pptx/.xlsx.
fn is_encrypted_package(bytes: &[u8]) -> bool {
    let marker: Vec<u8> = "EncryptedPackage"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    bytes.starts_with(OLE_MAGIC) && bytes.windows(marker.len()).any(|w| w == marker.as_slice())
}

/// An opened package with a budget of bytes left to inflate.
struct Package<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    budget: u64,
}

impl<'a> Package<'a> {
    fn open(bytes: &'a [u8], what: &str) -> Result<Self, ExtractError> {
        if bytes.starts_with(OLE_MAGIC) {
            if is_encrypted_package(bytes) {
                return Err(ExtractError::Encrypted);
            }
            return Err(corrupt(format!(
                "The file is a legacy binary Office document, not a {what} package."
            )));
        }
        let archive = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| corrupt(format!("The {what} package cannot be opened ({e}).")))?;
        Ok(Package {
            archive,
            budget: MAX_TOTAL_BYTES,
        })
    }

    fn names(&self) -> Vec<String> {
        self.archive
            .file_names()
            .filter_map(|name| name.ok().map(|n| n.into_owned()))
            .collect()
    }

    /// A part's text, or `None` if the package has no such part.
    fn read(&mut self, name: &str) -> Result<Option<String>, ExtractError> {
        let mut entry = match self.archive.by_name(name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(corrupt(format!("Part {name} cannot be read ({e})."))),
        };
        if entry.encrypted() {
            return Err(ExtractError::Encrypted);
        }
        let limit = MAX_PART_BYTES.min(self.budget);
        let mut data = Vec::new();
        (&mut entry)
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| corrupt(format!("Part {name} is damaged ({e}).")))?;
        if data.len() as u64 > limit {
            return Err(corrupt(format!(
                "Part {name} expands to more than {} MiB: refused as a possible zip bomb.",
                limit / (1024 * 1024)
            )));
        }
        self.budget -= data.len() as u64;
        String::from_utf8(data)
            .map(Some)
            .map_err(|_| corrupt(format!("Part {name} is not UTF-8 XML.")))
    }
}

/// The local name of an XML tag (`w:p` → `p`).
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn attribute(e: &quick_xml::events::BytesStart<'_>, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| local(a.key.as_ref()) == key)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::default())
                .ok()
                .map(|v| v.into_owned())
        })
}

/// Walks XML events with a depth limit; `visit` sees starts (and empty tags, as a start
/// followed by an end), ends and text.
fn walk(
    xml: &str,
    mut visit: impl FnMut(XmlEvent<'_, '_>) -> Result<(), ExtractError>,
) -> Result<(), ExtractError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(corrupt(format!(
                        "The XML is nested more than {MAX_DEPTH} levels deep."
                    )));
                }
                visit(XmlEvent::Start(&e))?;
            }
            Ok(Event::Empty(e)) => {
                visit(XmlEvent::Start(&e))?;
                visit(XmlEvent::End(local(e.name().as_ref())))?;
            }
            Ok(Event::End(e)) => {
                depth = depth.saturating_sub(1);
                visit(XmlEvent::End(local(e.name().as_ref())))?;
            }
            Ok(Event::Text(t)) => visit(XmlEvent::Text(&t.xml10_content()))?,
            Ok(Event::GeneralRef(r)) => {
                let name: &str = r.as_ref();
                let text = crate::formats::decode_entities(&format!("&{name};"));
                visit(XmlEvent::Text(&text))?;
            }
            Ok(Event::CData(t)) => visit(XmlEvent::Text(&t.xml10_content()))?,
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(corrupt(format!("Malformed XML ({e})."))),
        }
    }
}

enum XmlEvent<'a, 'b> {
    Start(&'a quick_xml::events::BytesStart<'b>),
    End(&'a str),
    Text(&'a str),
}

/// The text of a paragraph-structured part (`w:p`/`a:p` paragraphs of `w:t`/`a:t` runs):
/// one line per paragraph; tabs and breaks kept; `skip` tags' text left out.
fn paragraphs(xml: &str, skip: &[&str]) -> Result<Vec<String>, ExtractError> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut in_text = false;
    let mut skipping = 0usize;
    walk(xml, |event| {
        match event {
            XmlEvent::Start(e) => {
                let name = e.name();
                let tag = local(name.as_ref());
                if skip.contains(&tag) {
                    skipping += 1;
                }
                match tag {
                    "t" => in_text = true,
                    "tab" => current.push('\t'),
                    "br" | "cr" => current.push('\n'),
                    _ => {}
                }
            }
            XmlEvent::End(tag) => {
                if skip.contains(&tag) {
                    skipping = skipping.saturating_sub(1);
                }
                match tag {
                    "t" => in_text = false,
                    "p" => lines.push(std::mem::take(&mut current)),
                    _ => {}
                }
            }
            XmlEvent::Text(text) if in_text && skipping == 0 => current.push_str(text),
            XmlEvent::Text(_) => {}
        }
        Ok(())
    })?;
    if !current.is_empty() {
        lines.push(current);
    }
    Ok(lines)
}

fn prose(title: Option<String>, page: Option<u32>, text: String) -> Section {
    Section {
        title,
        page,
        kind: SectionKind::Prose,
        text,
    }
}

/// The heading level of a Word paragraph style (`Heading1`, `heading 2`, `Title`).
fn heading_level(style: &str) -> Option<u32> {
    let lower = style.to_ascii_lowercase().replace(' ', "");
    if lower == "title" {
        return Some(0);
    }
    lower.strip_prefix("heading")?.parse().ok()
}

/// Word: the body's paragraphs (headings start sections, list items get a bullet), tables as
/// rows under their first row, then headers and footers.
pub(crate) fn docx(bytes: &[u8]) -> Result<Document, ExtractError> {
    let mut package = Package::open(bytes, "Word")?;
    let body = package
        .read("word/document.xml")?
        .ok_or_else(|| corrupt("The Word package has no word/document.xml."))?;

    let mut sections: Vec<Section> = Vec::new();
    let mut title: Option<String> = None;
    let mut text = String::new();
    // Paragraph state.
    let mut paragraph = String::new();
    let mut style: Option<String> = None;
    let mut listed = false;
    let mut in_text = false;
    // Table state: nesting depth, rows of cells.
    let mut table_depth = 0usize;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut cell = String::new();

    let flush = |sections: &mut Vec<Section>, title: &mut Option<String>, text: &mut String| {
        if !text.trim().is_empty() || title.is_some() {
            sections.push(prose(title.take(), None, std::mem::take(text)));
        }
        text.clear();
    };
    walk(&body, |event| {
        match event {
            XmlEvent::Start(e) => {
                let name = e.name();
                match local(name.as_ref()) {
                    "t" => in_text = true,
                    "tab" => paragraph.push('\t'),
                    "br" | "cr" => paragraph.push('\n'),
                    "pStyle" => style = attribute(e, "val"),
                    "numPr" => listed = true,
                    "tbl" => {
                        table_depth += 1;
                    }
                    "tr" if table_depth == 1 => rows.push(Vec::new()),
                    _ => {}
                }
            }
            XmlEvent::Text(t) if in_text => paragraph.push_str(t),
            XmlEvent::Text(_) => {}
            XmlEvent::End(tag) => match tag {
                "t" => in_text = false,
                "p" => {
                    let line = std::mem::take(&mut paragraph);
                    let line = line.trim_end();
                    if table_depth > 0 {
                        if !cell.is_empty() && !line.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(line.trim());
                    } else if let Some(_level) = style.as_deref().and_then(heading_level) {
                        flush(&mut sections, &mut title, &mut text);
                        title = Some(line.trim().to_string()).filter(|t| !t.is_empty());
                        if let Some(t) = &title {
                            text.push_str(t);
                            text.push_str("\n\n");
                        }
                    } else if !line.trim().is_empty() {
                        if listed {
                            text.push_str("- ");
                        }
                        text.push_str(line);
                        text.push_str("\n\n");
                    }
                    style = None;
                    listed = false;
                }
                "tc" if table_depth == 1 => {
                    if let Some(row) = rows.last_mut() {
                        row.push(std::mem::take(&mut cell));
                    }
                }
                "tbl" => {
                    table_depth = table_depth.saturating_sub(1);
                    if table_depth == 0 {
                        let lines: Vec<String> = std::mem::take(&mut rows)
                            .into_iter()
                            .map(|row| row.join(" | "))
                            .filter(|line| !line.trim_matches([' ', '|']).is_empty())
                            .collect();
                        if let Some(table) = table_section(None, lines) {
                            flush(&mut sections, &mut title, &mut text);
                            sections.push(table);
                        }
                    }
                }
                _ => {}
            },
        }
        Ok(())
    })?;
    flush(&mut sections, &mut title, &mut text);

    // Headers and footers, once each (they repeat on every page).
    let mut seen = std::collections::HashSet::new();
    let mut names: Vec<String> = package
        .names()
        .into_iter()
        .filter(|n| {
            (n.starts_with("word/header") || n.starts_with("word/footer")) && n.ends_with(".xml")
        })
        .collect();
    // Headers first, then footers.
    names.sort_by_key(|n| (n.starts_with("word/footer"), n.clone()));
    for name in names {
        let Some(xml) = package.read(&name)? else {
            continue;
        };
        let lines = paragraphs(&xml, &[])?;
        let joined = lines.join("\n").trim().to_string();
        if !joined.is_empty() && seen.insert(joined.clone()) {
            let kind = if name.starts_with("word/header") {
                "Header"
            } else {
                "Footer"
            };
            sections.push(prose(Some(kind.into()), None, joined));
        }
    }
    Ok(Document {
        sections,
        pages: None,
        extractor: 0,
    })
}

/// Inflates every part to nowhere, within the package limits: run before handing a package
/// to a reader that would hold whole parts in memory (a zip bomb fails here, cheaply).
fn check_expansion(bytes: &[u8], what: &str) -> Result<(), ExtractError> {
    let mut package = Package::open(bytes, what)?;
    for i in 0..package.archive.len() {
        let mut entry = package
            .archive
            .by_index(i)
            .map_err(|e| corrupt(format!("The {what} package is damaged ({e}).")))?;
        if entry.encrypted() {
            return Err(ExtractError::Encrypted);
        }
        let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
        let limit = MAX_PART_BYTES.min(package.budget);
        let inflated = std::io::copy(&mut (&mut entry).take(limit + 1), &mut std::io::sink())
            .map_err(|e| corrupt(format!("Part {name} is damaged ({e}).")))?;
        if inflated > limit {
            return Err(corrupt(format!(
                "Part {name} expands to more than {} MiB: refused as a possible zip bomb.",
                limit / (1024 * 1024)
            )));
        }
        package.budget -= inflated;
    }
    Ok(())
}

/// A spreadsheet cell as text (numbers without a needless `.0`).
fn cell_text(cell: &calamine::Data) -> String {
    match cell {
        calamine::Data::Empty => String::new(),
        calamine::Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        other => other.to_string().trim().to_string(),
    }
}

/// A non-empty spreadsheet cell: row, column, text.
type UsedCell = (u32, u32, String);

/// Most columns a row is padded across so that its cells stay under their header's; a row
/// spanning more lists its cells without the empty ones between them.
const MAX_PADDED_COLUMNS: u32 = 64;

/// Excel: sheet by sheet (the sheet name is the section title), rows under their first row.
/// XLSX sheets are read cell by cell, never as a whole grid: the grid of a sheet holding only
/// A1 and XFD1048576 would be 17 billion cells (calamine's `worksheet_range` allocates it and
/// the process aborts).
pub(crate) fn spreadsheet(bytes: &[u8], legacy: bool) -> Result<Document, ExtractError> {
    use calamine::Reader;
    let what = if legacy { "Excel 97-2003" } else { "Excel" };
    if !legacy {
        check_expansion(bytes, what)?;
    } else if is_encrypted_package(bytes) {
        return Err(ExtractError::Encrypted);
    }
    let unreadable = |message: String| {
        if message.to_ascii_lowercase().contains("password") {
            ExtractError::Encrypted
        } else {
            corrupt(format!("The {what} workbook cannot be read ({message})."))
        }
    };
    let mut sheets: Vec<(String, Vec<UsedCell>)> = Vec::new();
    if legacy {
        crate::xls::check_extent(bytes)?;
        let mut workbook =
            calamine::Xls::new(Cursor::new(bytes)).map_err(|e| unreadable(e.to_string()))?;
        for name in workbook.sheet_names() {
            let range = workbook
                .worksheet_range(&name)
                .map_err(|e| corrupt(format!("Sheet '{name}' cannot be read ({e}).")))?;
            let cells = range
                .used_cells()
                .map(|(row, col, cell)| (row as u32, col as u32, cell_text(cell)))
                .collect();
            sheets.push((name, cells));
        }
    } else {
        let mut workbook =
            calamine::Xlsx::new(Cursor::new(bytes)).map_err(|e| unreadable(e.to_string()))?;
        for name in workbook.sheet_names() {
            let sheet_error =
                |e: calamine::XlsxError| corrupt(format!("Sheet '{name}' cannot be read ({e})."));
            let mut reader = workbook
                .worksheet_cells_reader(&name)
                .map_err(sheet_error)?;
            let mut cells = Vec::new();
            while let Some(cell) = reader.next_cell().map_err(sheet_error)? {
                let (row, col) = cell.get_position();
                cells.push((row, col, cell_text(&cell.get_value().clone().into())));
            }
            sheets.push((name, cells));
        }
    }
    let sections = sheets
        .into_iter()
        .filter_map(|(name, cells)| table_section(Some(name), sheet_lines(cells)))
        .collect();
    Ok(Document {
        sections,
        pages: None,
        extractor: 0,
    })
}

/// A sheet's rows as lines (`a | b | c`) from its used cells: from the sheet's first used
/// column to each row's last non-empty cell, empty cells kept (up to `MAX_PADDED_COLUMNS`).
fn sheet_lines(mut cells: Vec<UsedCell>) -> Vec<String> {
    cells.retain(|(_, _, text)| !text.is_empty());
    cells.sort_by_key(|&(row, col, _)| (row, col));
    let Some(first_col) = cells.iter().map(|&(_, col, _)| col).min() else {
        return Vec::new();
    };
    cells
        .chunk_by(|a, b| a.0 == b.0)
        .map(|row| {
            let last = row[row.len() - 1].1;
            if last - first_col >= MAX_PADDED_COLUMNS {
                let texts: Vec<&str> = row.iter().map(|(_, _, t)| t.as_str()).collect();
                return texts.join(" | ");
            }
            let mut line = vec![""; (last - first_col + 1) as usize];
            for (_, col, text) in row {
                line[(col - first_col) as usize] = text;
            }
            line.join(" | ")
        })
        .collect()
}

/// A table as a section: its rows under the first one, or, with a single row, that row as
/// prose (a header with nothing under it would be repeated in its own chunk).
fn table_section(title: Option<String>, mut lines: Vec<String>) -> Option<Section> {
    if lines.is_empty() {
        return None;
    }
    let header = lines.remove(0);
    let (kind, text) = if lines.is_empty() {
        (SectionKind::Prose, header)
    } else {
        (SectionKind::Rows { header }, lines.join("\n"))
    };
    Some(Section {
        title,
        page: None,
        kind,
        text,
    })
}

/// The number in a part name like `ppt/slides/slide12.xml`.
fn part_number(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?
        .strip_suffix(".xml")?
        .parse()
        .ok()
}

/// The slide parts in the order `presentation.xml` lists them (`sldIdLst`, through the
/// relationships of the presentation part); parts that are missing are skipped.
fn presentation_order(
    package: &mut Package,
    presentation: &str,
) -> Result<Vec<String>, ExtractError> {
    let mut ids = Vec::new();
    walk(presentation, |event| {
        if let XmlEvent::Start(e) = event
            && local(e.name().as_ref()) == "sldId"
            && let Some(id) = attribute_r_id(e)
        {
            ids.push(id);
        }
        Ok(())
    })?;
    let Some(rels) = package.read("ppt/_rels/presentation.xml.rels")? else {
        return Ok(Vec::new());
    };
    let mut targets = std::collections::HashMap::new();
    walk(&rels, |event| {
        if let XmlEvent::Start(e) = event
            && let (Some(id), Some(target)) = (attribute(e, "Id"), attribute(e, "Target"))
        {
            targets.insert(id, target);
        }
        Ok(())
    })?;
    let names: std::collections::HashSet<String> = package.names().into_iter().collect();
    Ok(ids
        .iter()
        .filter_map(|id| targets.get(id))
        .map(|target| format!("ppt/{}", target.trim_start_matches("/ppt/")))
        .filter(|name| names.contains(name))
        .collect())
}

/// The relationship ID of a `<p:sldId id="256" r:id="rId2"/>` (the `r:` attribute, not `id`).
fn attribute_r_id(e: &quick_xml::events::BytesStart<'_>) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref().ends_with(":id"))
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::default())
                .ok()
                .map(|v| v.into_owned())
        })
}

/// PowerPoint: slide by slide (page = slide number), each with its speaker notes.
pub(crate) fn pptx(bytes: &[u8]) -> Result<Document, ExtractError> {
    let mut package = Package::open(bytes, "PowerPoint")?;
    let mut parts: Vec<(u32, String)> = package
        .names()
        .into_iter()
        .filter_map(|n| part_number(&n, "ppt/slides/slide").map(|k| (k, n)))
        .collect();
    let presentation = package.read("ppt/presentation.xml")?;
    if parts.is_empty() && presentation.is_none() {
        return Err(corrupt("The PowerPoint package has no presentation."));
    }
    parts.sort();
    // Slide numbers are the presentation's order; part names only when it does not say.
    let ordered = match &presentation {
        Some(xml) => presentation_order(&mut package, xml)?,
        None => Vec::new(),
    };
    let slides: Vec<String> = if ordered.is_empty() {
        parts.into_iter().map(|(_, name)| name).collect()
    } else {
        ordered
    };
    let slide_count = slides.len() as u32;
    let mut sections = Vec::new();
    for (name, number) in slides.into_iter().zip(1u32..) {
        let Some(xml) = package.read(&name)? else {
            continue;
        };
        let lines: Vec<String> = paragraphs(&xml, &[])?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let mut text = lines.join("\n");
        // Notes hang off the slide's relationships.
        let rels = name.replace("ppt/slides/", "ppt/slides/_rels/") + ".rels";
        if let Some(rels) = package.read(&rels)? {
            let mut notes_part = None;
            walk(&rels, |event| {
                if let XmlEvent::Start(e) = event
                    && attribute(e, "Type").is_some_and(|t| t.ends_with("/notesSlide"))
                {
                    notes_part = attribute(e, "Target");
                }
                Ok(())
            })?;
            if let Some(target) = notes_part {
                let path = format!(
                    "ppt/{}",
                    target.trim_start_matches("../").trim_start_matches("/ppt/")
                );
                if let Some(notes) = package.read(&path)? {
                    // Leave out the slide-number field the notes page carries.
                    let notes: Vec<String> = paragraphs(&notes, &["fld"])?
                        .into_iter()
                        .filter(|l| !l.trim().is_empty())
                        .collect();
                    if !notes.is_empty() {
                        text.push_str("\n\nNotes: ");
                        text.push_str(&notes.join("\n"));
                    }
                }
            }
        }
        let title = lines
            .first()
            .map(|l| format!("Slide {number}: {}", l.trim()))
            .unwrap_or_else(|| format!("Slide {number}"));
        sections.push(prose(Some(title), Some(number), text));
    }
    Ok(Document {
        sections,
        pages: Some(slide_count),
        extractor: 0,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    pub(crate) use crate::fixtures::zip_package as package;

    const W: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;

    fn paragraph(style: Option<&str>, text: &str) -> String {
        let style = style
            .map(|s| format!(r#"<w:pPr><w:pStyle w:val="{s}"/></w:pPr>"#))
            .unwrap_or_default();
        format!("<w:p>{style}<w:r><w:t>{text}</w:t></w:r></w:p>")
    }

    fn docx_of(body: &str) -> Vec<u8> {
        let document =
            format!(r#"<?xml version="1.0"?><w:document {W}><w:body>{body}</w:body></w:document>"#);
        package(&[
            ("[Content_Types].xml", "<Types/>"),
            ("word/document.xml", &document),
            (
                "word/header1.xml",
                &format!(
                    r#"<w:hdr {W}>{}</w:hdr>"#,
                    paragraph(None, "Quarterly report")
                ),
            ),
            (
                "word/footer1.xml",
                &format!(r#"<w:ftr {W}>{}</w:ftr>"#, paragraph(None, "Confidential")),
            ),
        ])
    }

    #[test]
    fn docx_keeps_headings_lists_tables_headers_and_footers() {
        let table = "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Metal</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Melting point</w:t></w:r></w:p></w:tc></w:tr>\
                     <w:tr><w:tc><w:p><w:r><w:t>Tin</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>232 &amp; more</w:t></w:r></w:p></w:tc></w:tr></w:tbl>";
        let body = format!(
            "{}{}<w:p><w:pPr><w:numPr><w:ilvl w:val=\"0\"/></w:numPr></w:pPr><w:r><w:t>first item</w:t></w:r></w:p>{}{}{}",
            paragraph(Some("Heading1"), "Introduction"),
            paragraph(None, "Kilns fire clay at high heat."),
            paragraph(Some("Heading2"), "Metals"),
            table,
            paragraph(None, "After the table."),
        );
        let doc = docx(&docx_of(&body)).unwrap();
        let titles: Vec<Option<&str>> = doc.sections.iter().map(|s| s.title.as_deref()).collect();
        assert_eq!(
            titles,
            [
                Some("Introduction"),
                Some("Metals"),
                None,
                None,
                Some("Header"),
                Some("Footer")
            ]
        );
        assert!(
            doc.sections[0]
                .text
                .contains("Kilns fire clay at high heat.")
        );
        assert!(doc.sections[0].text.contains("- first item"));
        assert_eq!(
            doc.sections[2].kind,
            SectionKind::Rows {
                header: "Metal | Melting point".into()
            }
        );
        assert_eq!(doc.sections[2].text, "Tin | 232 & more");
        assert!(doc.sections[3].text.contains("After the table."));
        assert_eq!(doc.sections[4].text, "Quarterly report");
        assert_eq!(doc.sections[5].text, "Confidential");
    }

    #[test]
    fn pptx_goes_slide_by_slide_with_notes() {
        let slide = |text: &str| {
            format!(
                r#"<p:sld xmlns:a="a" xmlns:p="p"><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r><a:t>{text}</a:t></a:r></a:p><a:p><a:r><a:t>second line</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#
            )
        };
        let rels = r#"<Relationships><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/notesSlide" Target="../notesSlides/notesSlide7.xml"/></Relationships>"#;
        let notes = r#"<p:notes xmlns:a="a" xmlns:p="p"><a:p><a:r><a:t>Say this slowly.</a:t></a:r></a:p><a:p><a:fld type="slidenum"><a:t>2</a:t></a:fld></a:p></p:notes>"#;
        let bytes = package(&[
            ("ppt/presentation.xml", "<p:presentation/>"),
            ("ppt/slides/slide10.xml", &slide("Tenth")),
            ("ppt/slides/slide2.xml", &slide("Second")),
            ("ppt/slides/_rels/slide2.xml.rels", rels),
            ("ppt/notesSlides/notesSlide7.xml", notes),
        ]);
        let doc = pptx(&bytes).unwrap();
        // No slide list in the presentation: part-number order, numbered from 1.
        assert_eq!(doc.sections.len(), 2);
        assert_eq!(doc.pages, Some(2));
        assert_eq!(doc.sections[0].page, Some(1));
        assert_eq!(doc.sections[0].title.as_deref(), Some("Slide 1: Second"));
        assert_eq!(
            doc.sections[0].text,
            "Second\nsecond line\n\nNotes: Say this slowly."
        );
        assert_eq!(doc.sections[1].page, Some(2));
        assert!(doc.sections[1].text.starts_with("Tenth"));
    }

    #[test]
    fn pptx_slides_are_numbered_in_presentation_order() {
        let slide = |text: &str| {
            format!(
                r#"<p:sld xmlns:a="a" xmlns:p="p"><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r><a:t>{text}</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#
            )
        };
        // Slides moved around in PowerPoint keep their part names: slide3 is shown first.
        let presentation = r#"<p:presentation xmlns:p="p" xmlns:r="r"><p:sldIdLst><p:sldId id="258" r:id="rId4"/><p:sldId id="256" r:id="rId2"/><p:sldId id="257" r:id="rId3"/></p:sldIdLst></p:presentation>"#;
        let rels = r#"<Relationships><Relationship Id="rId2" Type="t/slide" Target="slides/slide1.xml"/><Relationship Id="rId3" Type="t/slide" Target="slides/slide2.xml"/><Relationship Id="rId4" Type="t/slide" Target="/ppt/slides/slide3.xml"/></Relationships>"#;
        let bytes = package(&[
            ("ppt/presentation.xml", presentation),
            ("ppt/_rels/presentation.xml.rels", rels),
            ("ppt/slides/slide1.xml", &slide("Part one")),
            ("ppt/slides/slide2.xml", &slide("Part two")),
            ("ppt/slides/slide3.xml", &slide("Part three")),
        ]);
        let doc = pptx(&bytes).unwrap();
        let shown: Vec<(Option<u32>, &str)> = doc
            .sections
            .iter()
            .map(|s| (s.page, s.text.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (Some(1), "Part three"),
                (Some(2), "Part one"),
                (Some(3), "Part two")
            ]
        );
    }

    /// A workbook with one sheet of `rows` (inline strings and numbers).
    pub(crate) fn xlsx_of(sheet: &str, rows: &[&[&str]]) -> Vec<u8> {
        let cells = |r: usize, row: &[&str]| -> String {
            row.iter()
                .enumerate()
                .map(|(c, v)| {
                    let at = format!("{}{}", (b'A' + c as u8) as char, r + 1);
                    if v.parse::<f64>().is_ok() {
                        format!(r#"<c r="{at}"><v>{v}</v></c>"#)
                    } else {
                        format!(r#"<c r="{at}" t="inlineStr"><is><t>{v}</t></is></c>"#)
                    }
                })
                .collect()
        };
        let data: String = rows
            .iter()
            .enumerate()
            .map(|(r, row)| format!(r#"<row r="{}">{}</row>"#, r + 1, cells(r, row)))
            .collect();
        xlsx_with_sheet_data(sheet, &data)
    }

    /// A workbook with one sheet whose `<sheetData>` holds `data`.
    pub(crate) fn xlsx_with_sheet_data(sheet: &str, data: &str) -> Vec<u8> {
        let main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
        let rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
        package(&[
            (
                "[Content_Types].xml",
                r#"<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#,
            ),
            (
                "_rels/.rels",
                &format!(
                    r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
                ),
            ),
            (
                "xl/workbook.xml",
                &format!(
                    r#"<workbook xmlns="{main}" xmlns:r="{rel}"><sheets><sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>"#
                ),
            ),
            (
                "xl/_rels/workbook.xml.rels",
                &format!(
                    r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#
                ),
            ),
            (
                "xl/worksheets/sheet1.xml",
                &format!(r#"<worksheet xmlns="{main}"><sheetData>{data}</sheetData></worksheet>"#),
            ),
        ])
    }

    #[test]
    fn a_sheet_with_cells_at_opposite_corners_is_read_in_memory_of_its_cells() {
        // A1 and XFD1048576: a dense grid of the sheet would be 17 billion cells.
        let data = r#"<row r="1"><c r="A1" t="inlineStr"><is><t>Corner</t></is></c><c r="B1" t="inlineStr"><is><t>Next</t></is></c></row><row r="2"><c r="A2"><v>7</v></c><c r="C2"><v>9</v></c></row><row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>Far away</t></is></c></row>"#;
        let doc = spreadsheet(&xlsx_with_sheet_data("Wide", data), false).unwrap();
        assert_eq!(
            doc.sections[0].kind,
            SectionKind::Rows {
                header: "Corner | Next".into()
            }
        );
        // Near cells keep their columns; a row spanning more than the padding limit lists
        // its cells without padding.
        assert_eq!(doc.sections[0].text, "7 |  | 9\nFar away");
    }

    #[test]
    fn xlsx_goes_sheet_by_sheet_with_rows_under_their_header() {
        let bytes = xlsx_of(
            "Metals",
            &[
                &["Metal", "Melting point"],
                &["Tin", "232"],
                &["Lead", "327.5"],
            ],
        );
        let doc = spreadsheet(&bytes, false).unwrap();
        assert_eq!(doc.sections.len(), 1);
        assert_eq!(doc.sections[0].title.as_deref(), Some("Metals"));
        assert_eq!(
            doc.sections[0].kind,
            SectionKind::Rows {
                header: "Metal | Melting point".into()
            }
        );
        assert_eq!(doc.sections[0].text, "Tin | 232\nLead | 327.5");
        // Damage and bombs fail as corrupt, a protected workbook as encrypted.
        assert!(matches!(
            spreadsheet(&bytes[..bytes.len() / 2], false),
            Err(ExtractError::Corrupt(_))
        ));
        let mut ole = OLE_MAGIC.to_vec();
        ole.extend(vec![0u8; 512]);
        ole.extend("EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(spreadsheet(&ole, false), Err(ExtractError::Encrypted));
        assert!(matches!(
            spreadsheet(&ole[..520], true),
            Err(ExtractError::Corrupt(_))
        ));
    }

    #[test]
    fn hostile_packages_fail_cleanly() {
        // Not a ZIP at all, or cut short.
        assert!(matches!(
            docx(b"PK\x03\x04 garbage"),
            Err(ExtractError::Corrupt(_))
        ));
        let whole = docx_of(&paragraph(None, "text"));
        assert!(matches!(
            docx(&whole[..whole.len() / 2]),
            Err(ExtractError::Corrupt(_))
        ));
        // A Word package without its body.
        let empty = package(&[("[Content_Types].xml", "<Types/>")]);
        assert!(matches!(docx(&empty), Err(ExtractError::Corrupt(_))));
        // A zip bomb: 100 MiB of zeros deflate to ~100 KiB; refused at the part limit.
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer.start_file("word/document.xml", options).unwrap();
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..100 {
            writer.write_all(&zeros).unwrap();
        }
        let bomb = writer.finish().unwrap().into_inner();
        assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
        match docx(&bomb) {
            Err(ExtractError::Corrupt(m)) => assert!(m.contains("zip bomb"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Nesting far deeper than any document.
        let deep = format!("{}{}", "<w:x>".repeat(10_000), "</w:x>".repeat(10_000));
        let nested = package(&[("word/document.xml", &deep)]);
        match docx(&nested) {
            Err(ExtractError::Corrupt(m)) => assert!(m.contains("nested"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A password-protected package (a compound file holding EncryptedPackage).
        let mut ole = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1".to_vec();
        ole.extend(vec![0u8; 512]);
        ole.extend("EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(docx(&ole), Err(ExtractError::Encrypted));
        assert_eq!(pptx(&ole), Err(ExtractError::Encrypted));
        // The spreadsheet reader holds whole parts in memory: the bomb is stopped before it.
        match spreadsheet(&bomb, false) {
            Err(ExtractError::Corrupt(m)) => assert!(m.contains("zip bomb"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
