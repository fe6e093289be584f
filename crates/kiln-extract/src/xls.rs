//! A bound on what calamine allocates for a legacy (Excel 97-2003) workbook.
//!
//! calamine builds every XLS sheet as a whole grid — first to last used row, times first to
//! last used column — when it opens the file, and reserves room for the area a sheet's
//! DIMENSIONS record names. A file of a few hundred bytes naming cell A1 and a cell at row
//! 65,536, column 65,536 makes it allocate about 170 GB, and the process aborts (an
//! allocation failure is not a panic that can be caught). So before calamine opens a
//! workbook, this walks its records the way calamine will — each sheet from the stream
//! position its BOUNDSHEET record gives, skipping nested substreams (embedded charts) — and
//! refuses one whose grids add up to more than `MAX_GRID_CELLS`.

use std::io::{Cursor, Read};

use crate::ExtractError;

/// The most grid cells (over all sheets, values and formulas) a legacy workbook may span:
/// 64 columns of all 65,536 rows an Excel 97-2003 sheet has. calamine keeps a cell in 32 to
/// 48 bytes, and hands out a copy of a sheet's grid, so this bounds what it holds to a few
/// hundred MiB.
pub(crate) const MAX_GRID_CELLS: u64 = 1 << 22;

const BOF: u16 = 0x0809;
const EOF: u16 = 0x000A;
const BOUNDSHEET: u16 = 0x0085;
const DIMENSIONS: u16 = 0x0200;
const FORMULA: u16 = 0x0006;
/// A formula's string value: calamine puts it at the last formula's cell, or A1 before any.
const STRING: u16 = 0x0207;
const MULRK: u16 = 0x00BD;
/// Records that calamine turns into one cell at (row, column) read from their first 4 bytes:
/// Number, Label, RString, BoolErr, Rk, LabelSst.
const CELLS: [u16; 6] = [0x0203, 0x0204, 0x00D6, 0x0205, 0x027E, 0x00FD];

/// The rows and columns a sheet's cells cover.
#[derive(Default)]
struct Extent(Option<(u32, u32, u32, u32)>);

impl Extent {
    fn cover(&mut self, row: u32, first_col: u32, last_col: u32) {
        let (r0, r1, c0, c1) = self.0.get_or_insert((row, row, first_col, last_col));
        *r0 = (*r0).min(row);
        *r1 = (*r1).max(row);
        *c0 = (*c0).min(first_col);
        *c1 = (*c1).max(last_col);
    }

    fn cells(&self) -> u64 {
        self.0.map_or(0, |(r0, r1, c0, c1)| {
            (u64::from(r1 - r0) + 1).saturating_mul(u64::from(c1.saturating_sub(c0)) + 1)
        })
    }
}

/// The records of `stream` from its start: `(type, data)`, until the bytes run out.
fn records(stream: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        let typ = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]);
        let len = usize::from(u16::from_le_bytes([*rest.get(2)?, *rest.get(3)?]));
        let data = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some((typ, data))
    })
}

fn u16_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes([
        *data.get(at)?,
        *data.get(at + 1)?,
    ])))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// How many cells calamine reserves for a DIMENSIONS record (mirroring its arithmetic).
fn dimension_cells(data: &[u8]) -> u64 {
    let fields = match data.len() {
        10 => (
            u16_at(data, 0),
            u16_at(data, 2),
            u16_at(data, 4),
            u16_at(data, 6),
        ),
        14 | 16 => (
            u32_at(data, 0),
            u32_at(data, 4),
            u16_at(data, 8),
            u16_at(data, 10),
        ),
        _ => return 0,
    };
    let (Some(first_row), Some(end_row), Some(mut first_col), Some(end_col)) = fields else {
        return 0;
    };
    if first_col > 0xFF || end_col < first_col {
        first_col = 0;
    }
    if end_row == 0 || end_col == 0 {
        return 1;
    }
    let rows = (end_row - 1).wrapping_sub(first_row).wrapping_add(1);
    let cols = (end_col - 1).wrapping_sub(first_col).wrapping_add(1);
    u64::from(rows).saturating_mul(u64::from(cols))
}

/// The grid cells calamine will build for the sheet whose substream starts `sheet`.
fn sheet_cells(sheet: &[u8]) -> u64 {
    let (mut values, mut formulas) = (Extent::default(), Extent::default());
    let mut reserved = 0u64;
    let mut formula_at = (0, 0);
    let mut seen_own_bof = false;
    let mut nested = 0usize;
    for (typ, data) in records(sheet) {
        if nested > 0 {
            match typ {
                BOF => nested += 1,
                EOF => nested -= 1,
                _ => {}
            }
            continue;
        }
        let at = (u16_at(data, 0), u16_at(data, 2));
        match (typ, at) {
            (BOF, _) if seen_own_bof => nested += 1,
            (BOF, _) => seen_own_bof = true,
            (EOF, _) => break,
            (DIMENSIONS, _) => reserved = reserved.saturating_add(dimension_cells(data)),
            (FORMULA, (Some(row), Some(col))) => {
                formula_at = (row, col);
                values.cover(row, col, col);
                formulas.cover(row, col, col);
            }
            (STRING, _) => values.cover(formula_at.0, formula_at.1, formula_at.1),
            (MULRK, (Some(row), Some(first))) => {
                let last = data
                    .len()
                    .checked_sub(2)
                    .and_then(|at| u16_at(data, at))
                    .unwrap_or(first);
                values.cover(row, first.min(last), first.max(last));
            }
            (typ, (Some(row), Some(col))) if CELLS.contains(&typ) => values.cover(row, col, col),
            _ => {}
        }
    }
    reserved
        .saturating_add(values.cells())
        .saturating_add(formulas.cells())
}

/// Refuses a legacy workbook whose sheets would make calamine build grids of more than
/// `MAX_GRID_CELLS` cells; a file that is no compound file, or has no workbook stream, is
/// corrupt.
pub(crate) fn check_extent(bytes: &[u8]) -> Result<(), ExtractError> {
    let unreadable = |why: String| {
        ExtractError::Corrupt(format!(
            "The Excel 97-2003 workbook cannot be read ({why})."
        ))
    };
    let mut file =
        cfb::CompoundFile::open(Cursor::new(bytes)).map_err(|e| unreadable(e.to_string()))?;
    let name = ["/Workbook", "/Book"]
        .into_iter()
        .find(|name| file.is_stream(name))
        .ok_or_else(|| unreadable("it has no workbook stream".into()))?;
    let mut stream = Vec::new();
    file.open_stream(name)
        .and_then(|s| s.take(bytes.len() as u64).read_to_end(&mut stream))
        .map_err(|e| unreadable(e.to_string()))?;
    // The globals substream lists each sheet's position; calamine reads each from there.
    let mut cells = 0u64;
    for (typ, data) in records(&stream) {
        match typ {
            EOF => break,
            BOUNDSHEET => {
                let Some(sheet) = u32_at(data, 0).and_then(|at| stream.get(at as usize..)) else {
                    continue;
                };
                cells = cells.saturating_add(sheet_cells(sheet));
            }
            _ => {}
        }
    }
    if cells > MAX_GRID_CELLS {
        return Err(ExtractError::Corrupt(format!(
            "The Excel 97-2003 workbook's sheets span {cells} cells from their first to last \
             used rows and columns, more than the {MAX_GRID_CELLS} Kiln reads from this format. \
             Save it as .xlsx (read cell by cell, without this limit) and upload it again."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{biff as record, biff_bof, biff_number, xls_of};

    #[test]
    fn a_workbook_within_the_bound_is_read_and_a_far_cell_is_refused_before_calamine_sees_it() {
        let small = xls_of(
            "Prices",
            &[(0, 0, 1.0), (0, 1, 2.0), (1, 0, 3.5), (1, 1, 4.0)],
        );
        assert_eq!(check_extent(&small), Ok(()));
        let doc = crate::office::spreadsheet(&small, true).unwrap();
        assert_eq!(doc.sections[0].title.as_deref(), Some("Prices"));
        assert_eq!(doc.sections[0].text, "3.5 | 4");

        // A1 and a cell at the last row and column a BIFF record can name: calamine would
        // build a grid of 4.3 billion cells (about 137 GB) and abort the process.
        let far = xls_of("Far", &[(0, 0, 1.0), (u16::MAX, u16::MAX, 2.0)]);
        let refused = crate::office::spreadsheet(&far, true).unwrap_err();
        let ExtractError::Corrupt(message) = refused else {
            panic!("refused as corrupt: {refused:?}");
        };
        assert!(message.contains("Save it as .xlsx"), "{message}");
        // The whole height of a sheet, 64 columns wide, is the most read.
        let tall = xls_of("Tall", &[(0, 0, 1.0), (u16::MAX, 63, 2.0)]);
        assert_eq!(check_extent(&tall), Ok(()));
        let wider = xls_of("Wider", &[(0, 0, 1.0), (u16::MAX, 64, 2.0)]);
        assert!(check_extent(&wider).is_err());
    }

    #[test]
    fn dimensions_and_nested_substreams_count_as_calamine_counts_them() {
        // DIMENSIONS of rows 0..2^32 and 256 columns: calamine reserves for all of them.
        let mut dims = 0u32.to_le_bytes().to_vec();
        dims.extend(u32::MAX.to_le_bytes());
        dims.extend(0u16.to_le_bytes());
        dims.extend(256u16.to_le_bytes());
        dims.extend(0u16.to_le_bytes());
        let mut sheet = biff_bof(0x0010);
        sheet.extend(record(DIMENSIONS, &dims));
        sheet.extend(record(EOF, &[]));
        assert!(sheet_cells(&sheet) > MAX_GRID_CELLS);

        // A chart inside the sheet: its cells are skipped, the sheet's own on both sides count.
        let number = |row: u16, col: u16| biff_number(row, col, 1.0);
        let mut sheet = biff_bof(0x0010);
        sheet.extend(number(0, 0));
        sheet.extend(biff_bof(0x0020));
        sheet.extend(number(60_000, 200));
        sheet.extend(record(EOF, &[]));
        sheet.extend(number(9, 3));
        sheet.extend(record(EOF, &[]));
        assert_eq!(sheet_cells(&sheet), 10 * 4);
    }
}
