//! Catalog errors, each with the file, line and column it points at.

use std::fmt;

/// One problem in a catalog file, located at a line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct CatalogError {
    /// The file name as given to [`crate::catalog::Catalog::parse`].
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    /// A plain-language message, without the location.
    pub message: String,
}

/// Every problem found while loading a catalog, in file order.
///
/// Displays one error per line as `<file>:<line>:<col>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogErrors(pub Vec<CatalogError>);

impl CatalogErrors {
    /// The errors, in file order.
    pub fn errors(&self) -> &[CatalogError] {
        &self.0
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no errors (never true for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CatalogErrors {}

/// Converts byte offsets in the source to 1-based line and column numbers.
pub(crate) struct Locator<'a> {
    src: &'a str,
    file: &'a str,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(src: &'a str, file: &'a str) -> Self {
        Locator { src, file }
    }

    pub(crate) fn error(&self, offset: usize, message: impl Into<String>) -> CatalogError {
        let offset = offset.min(self.src.len());
        let mut offset = offset;
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        CatalogError {
            file: self.file.to_string(),
            line,
            col,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_offsets() {
        let src = "a = 1\nbé = 2\n";
        let loc = Locator::new(src, "x.toml");
        assert_eq!(loc.error(0, "m").to_string(), "x.toml:1:1: m");
        assert_eq!(loc.error(6, "m").to_string(), "x.toml:2:1: m");
        // "bé " is 4 bytes but 3 characters.
        assert_eq!(loc.error(10, "m").to_string(), "x.toml:2:4: m");
        assert_eq!(loc.error(1000, "m").line, 3);
    }

    #[test]
    fn displays_one_error_per_line() {
        let loc = Locator::new("x\ny", "c.toml");
        let errs = CatalogErrors(vec![loc.error(0, "first"), loc.error(2, "second")]);
        assert_eq!(errs.to_string(), "c.toml:1:1: first\nc.toml:2:1: second");
    }
}
