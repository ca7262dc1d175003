//! HL7 v2 message structure: delimiters from MSH-1/MSH-2, segments, fields, repetitions,
//! components, subcomponents and escape sequences. Borrowed slices; nothing is decoded
//! until a value is asked for.

use crate::error::DecodeError;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: Option<char>,
    pub subcomponent: char,
}

pub(crate) struct Segment<'a> {
    pub name: &'a str,
    /// `fields[n]` is SEG-n (for MSH too: `fields[1]` is the field separator).
    pub fields: Vec<&'a str>,
}

pub(crate) struct Message<'a> {
    pub delimiters: Delimiters,
    pub segments: Vec<Segment<'a>>,
}

impl<'a> Message<'a> {
    pub fn parse(text: &'a str) -> Result<Message<'a>, DecodeError> {
        let mut chars = text.chars();
        let header: String = chars.by_ref().take(3).collect();
        if header != "MSH" {
            return Err(DecodeError::TruncatedHl7("no MSH segment".into()));
        }
        let field = chars.next().ok_or_else(|| DecodeError::TruncatedHl7("MSH ends before MSH-1".into()))?;
        if field.is_alphanumeric() || field == '\r' || field == '\n' {
            return Err(DecodeError::bad("MSH-1", format!("'{field}' cannot be a field separator")));
        }
        let encoding: Vec<char> = chars.take_while(|c| *c != field && *c != '\r' && *c != '\n').collect();
        if encoding.len() < 2 || encoding.len() > 5 {
            return Err(DecodeError::bad("MSH-2", "encoding characters must be 2 to 5 characters (e.g. ^~\\&)"));
        }
        let mut distinct = encoding.clone();
        distinct.push(field);
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != encoding.len() + 1 || encoding.iter().any(|c| c.is_alphanumeric()) {
            return Err(DecodeError::bad("MSH-2", "encoding characters must be distinct non-alphanumeric characters"));
        }
        let delimiters = Delimiters {
            field,
            component: encoding[0],
            repetition: encoding[1],
            escape: encoding.get(2).copied(),
            subcomponent: encoding.get(3).copied().unwrap_or('&'),
        };
        let mut segments = Vec::new();
        for line in text.split(['\r', '\n']).filter(|l| !l.trim().is_empty()) {
            let mut fields: Vec<&str> = line.split(field).collect();
            let name = fields.first().copied().unwrap_or_default();
            if name.len() != 3 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(DecodeError::bad(
                    "segment",
                    format!("bad segment name '{}'", name.chars().take(10).collect::<String>()),
                ));
            }
            if name == "MSH" {
                // MSH-1 is the separator itself, so shift: fields[1] = separator.
                fields.insert(1, "");
            }
            segments.push(Segment { name, fields });
        }
        Ok(Message { delimiters, segments })
    }

    pub fn segment(&self, name: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|s| s.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.segment(name).is_some()
    }

    /// The raw field SEG-n of the first such segment.
    pub fn field(&self, segment: &str, field: usize) -> Option<&'a str> {
        self.segment(segment).and_then(|s| s.fields.get(field).copied())
    }

    /// Repetitions of a field.
    pub fn repetitions(&self, raw: &'a str) -> Vec<&'a str> {
        raw.split(self.delimiters.repetition).collect()
    }

    /// Component `c` (1-based) and subcomponent `s` (1-based) of one repetition, unescaped;
    /// `None` when absent or empty.
    pub fn component(&self, repetition: &str, c: usize, s: usize) -> Option<String> {
        let comp = repetition.split(self.delimiters.component).nth(c.checked_sub(1)?)?;
        let sub = comp.split(self.delimiters.subcomponent).nth(s.checked_sub(1)?)?;
        let value = self.unescape(sub);
        let value = value.trim();
        if value.is_empty() || value == "\"\"" { None } else { Some(value.to_string()) }
    }

    /// Resolves escape sequences: \F\ \S\ \T\ \R\ \E\, \Xhh..\ and \.br\. An unknown or
    /// unterminated sequence is kept literally.
    pub fn unescape(&self, raw: &str) -> String {
        let Some(esc) = self.delimiters.escape else { return raw.to_string() };
        if !raw.contains(esc) {
            return raw.to_string();
        }
        let d = self.delimiters;
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find(esc) {
            out.push_str(&rest[..start]);
            let after = &rest[start + esc.len_utf8()..];
            let Some(end) = after.find(esc) else {
                out.push_str(&rest[start..]);
                return out;
            };
            let code = &after[..end];
            match code {
                "F" => out.push(d.field),
                "S" => out.push(d.component),
                "T" => out.push(d.subcomponent),
                "R" => out.push(d.repetition),
                "E" => out.push(esc),
                ".br" => out.push('\n'),
                _ if code.starts_with('X') && code.len() > 1 && code.len() % 2 == 1 => {
                    let bytes: Option<Vec<u8>> = (1..code.len())
                        .step_by(2)
                        .map(|i| code.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                        .collect();
                    match bytes {
                        Some(b) => out.push_str(&String::from_utf8_lossy(&b)),
                        None => {
                            out.push(esc);
                            out.push_str(code);
                            out.push(esc);
                        }
                    }
                }
                _ => {
                    out.push(esc);
                    out.push_str(code);
                    out.push(esc);
                }
            }
            rest = &after[end + esc.len_utf8()..];
        }
        out.push_str(rest);
        out
    }
}
