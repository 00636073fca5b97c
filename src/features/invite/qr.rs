//! An invitation's URI as a QR code drawn in a terminal, two module rows per text line
//! with Unicode half blocks (as `qrencode -t UTF8` draws them), so that a phone's camera
//! (Conversations' "Scan QR code") reads it off the owner's screen.
//!
//! Encoding is the `qrcode` crate's (ISO/IEC 18004, error correction level M, the version
//! chosen for the length); drawing is done here, from its module matrix, so that the
//! picture is exactly that matrix and tests can read it back ([`read_back`]).
//!
//! Terminals are mostly light text on a dark background, so a *light* module is drawn
//! as ink (a block) and a dark one as the background (a space), with the 4-module quiet
//! zone of light modules around it (ISO/IEC 18004 §7.3.8).

use qrcode::{Color, EcLevel, QrCode};

/// The quiet zone's width, in modules, on every side.
pub const QUIET: usize = 4;

/// `data` cannot be encoded (longer than a QR code holds).
#[derive(Debug)]
pub struct TooLong(pub qrcode::types::QrError);

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot draw a QR code: {}", self.0)
    }
}

impl std::error::Error for TooLong {}

/// The module matrix for `data`: `width` rows of `width` modules, `true` for dark,
/// quiet zone not included.
pub fn modules(data: &str) -> Result<(usize, Vec<bool>), TooLong> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).map_err(TooLong)?;
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == Color::Dark)
        .collect();
    Ok((code.width(), dark))
}

/// `data` as a QR code in lines of text (no line endings), quiet zone included.
pub fn render(data: &str) -> Result<Vec<String>, TooLong> {
    let (width, dark) = modules(data)?;
    let size = width + 2 * QUIET;
    // Dark at (x, y) of the picture with its quiet zone; outside is light.
    let is_dark = |x: usize, y: usize| {
        x >= QUIET
            && y >= QUIET
            && x < QUIET + width
            && y < QUIET + width
            && dark[(y - QUIET) * width + (x - QUIET)]
    };
    let mut lines = Vec::with_capacity(size.div_ceil(2));
    for y in (0..size).step_by(2) {
        let line: String = (0..size)
            .map(|x| {
                // Below the last row (an odd size) counts as dark: the background.
                let top_ink = !is_dark(x, y);
                let bottom_ink = y + 1 < size && !is_dark(x, y + 1);
                match (top_ink, bottom_ink) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                }
            })
            .collect();
        lines.push(line);
    }
    Ok(lines)
}

/// The module matrix a picture from [`render`] shows, quiet zone removed: `true` for
/// dark. For tests, and for anyone checking a drawing against [`modules`].
pub fn read_back(lines: &[String]) -> Option<(usize, Vec<bool>)> {
    let size = lines.first()?.chars().count();
    let width = size.checked_sub(2 * QUIET)?;
    let mut dark = Vec::with_capacity(width * width);
    let mut rows: Vec<Vec<bool>> = Vec::with_capacity(size + 1);
    for line in lines {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in line.chars() {
            let (t, b) = match c {
                '█' => (false, false),
                '▀' => (false, true),
                '▄' => (true, false),
                ' ' => (true, true),
                _ => return None,
            };
            top.push(t);
            bottom.push(b);
        }
        if top.len() != size {
            return None;
        }
        rows.push(top);
        rows.push(bottom);
    }
    for row in rows.iter().skip(QUIET).take(width) {
        dark.extend(&row[QUIET..QUIET + width]);
    }
    (dark.len() == width * width).then_some((width, dark))
}
