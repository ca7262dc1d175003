//! A streaming reader of `multipart/related` bodies (RFC 2046): bytes go in as they arrive
//! from the network, parts come out as header blocks and data slices. Memory is bounded
//! by the delimiter's length plus one chunk, never by a part or the body. Any input, however
//! malformed, ends in an error or in events; it never panics.

use memchr::memmem;

/// What the reader found in the bytes fed so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A part begins; its headers, names lower-cased.
    Begin(Vec<(String, String)>),
    /// Bytes of the current part's body.
    Data(Vec<u8>),
    /// The current part is complete.
    End,
    /// The closing delimiter: the body is complete.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("multipart headers of a part are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("multipart header line is not `name: value`")]
    BadHeader,
    #[error("the body ended inside a part (after {complete} complete parts): connection cut?")]
    Truncated { complete: usize },
    #[error("the body has no opening delimiter for boundary")]
    NoDelimiter,
}

const MAX_HEADERS: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (a preamble may come first).
    Preamble,
    /// After a delimiter line: reading the part's headers.
    Headers,
    /// Inside a part's body.
    Body,
    /// After the closing delimiter (an epilogue is ignored).
    Finished,
}

pub struct Reader {
    /// `\r\n--boundary`: what ends a part's body.
    delimiter: Vec<u8>,
    buffer: Vec<u8>,
    state: State,
    complete: usize,
}

impl Reader {
    pub fn new(boundary: &str) -> Reader {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The body's first delimiter may come without the leading CRLF: start as if one
        // had been read.
        Reader { delimiter, buffer: b"\r\n".to_vec(), state: State::Preamble, complete: 0 }
    }

    /// Parts read to their end so far.
    pub fn complete(&self) -> usize {
        self.complete
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, MultipartError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        loop {
            let progressed = match self.state {
                State::Preamble => self.preamble(),
                State::Headers => self.headers(&mut events)?,
                State::Body => self.body(&mut events),
                State::Finished => {
                    self.buffer.clear();
                    false
                }
            };
            if !progressed {
                return Ok(events);
            }
        }
    }

    /// The body ended: an error unless the closing delimiter was read.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.state {
            State::Finished => Ok(()),
            State::Preamble if self.complete == 0 => Err(MultipartError::NoDelimiter),
            _ => Err(MultipartError::Truncated { complete: self.complete }),
        }
    }

    fn preamble(&mut self) -> bool {
        match memmem::find(&self.buffer, &self.delimiter) {
            Some(at) => {
                self.buffer.drain(..at + self.delimiter.len());
                self.state = State::Headers;
                true
            }
            None => {
                // keep only what could still be the start of a delimiter
                let keep = self.delimiter.len().min(self.buffer.len());
                self.buffer.drain(..self.buffer.len() - keep);
                false
            }
        }
    }

    /// After a delimiter: `--` closes the body; otherwise a line end, then headers up to
    /// an empty line.
    fn headers(&mut self, events: &mut Vec<Event>) -> Result<bool, MultipartError> {
        if self.buffer.len() < 2 {
            return Ok(false);
        }
        if self.buffer.starts_with(b"--") {
            self.state = State::Finished;
            events.push(Event::Done);
            return Ok(true);
        }
        let Some(end) = memmem::find(&self.buffer, b"\r\n\r\n") else {
            if self.buffer.len() > MAX_HEADERS {
                return Err(MultipartError::HeadersTooLarge(MAX_HEADERS));
            }
            return Ok(false);
        };
        if end > MAX_HEADERS {
            return Err(MultipartError::HeadersTooLarge(MAX_HEADERS));
        }
        let block = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        self.buffer.drain(..end + 4);
        let mut headers = Vec::new();
        // The delimiter line's rest (transport padding) comes first, then the header lines.
        for line in block.split("\r\n").skip(1) {
            if line.is_empty() {
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(MultipartError::BadHeader)?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        events.push(Event::Begin(headers));
        self.state = State::Body;
        Ok(true)
    }

    fn body(&mut self, events: &mut Vec<Event>) -> bool {
        match memmem::find(&self.buffer, &self.delimiter) {
            Some(at) => {
                // the part's bytes leave as they are; only what follows is copied
                let rest = self.buffer.split_off(at + self.delimiter.len());
                let mut data = std::mem::replace(&mut self.buffer, rest);
                data.truncate(at);
                if at > 0 {
                    events.push(Event::Data(data));
                }
                events.push(Event::End);
                self.complete += 1;
                self.state = State::Headers;
                true
            }
            None => {
                // everything but a possible delimiter start is the part's data
                let keep = (self.delimiter.len() - 1).min(self.buffer.len());
                let ready = self.buffer.len() - keep;
                if ready > 0 {
                    // hand the buffer over and keep only its short tail: no copy of the data
                    let tail = self.buffer.split_off(ready);
                    events.push(Event::Data(std::mem::replace(&mut self.buffer, tail)));
                }
                false
            }
        }
    }
}

/// The `boundary` parameter of a `multipart/related` Content-Type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = b"preamble\r\n".to_vec();
        for p in parts {
            out.extend_from_slice(b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n");
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    /// Feeds `bytes` in chunks of `size`; returns the parts' bodies, and whether it finished.
    fn read(bytes: &[u8], size: usize) -> (Vec<Vec<u8>>, Result<(), MultipartError>) {
        let mut reader = Reader::new("XyZ");
        let mut parts = Vec::new();
        for chunk in bytes.chunks(size.max(1)) {
            match reader.feed(chunk) {
                Ok(events) => {
                    for e in events {
                        match e {
                            Event::Begin(_) => parts.push(Vec::new()),
                            Event::Data(d) => parts.last_mut().unwrap().extend(d),
                            Event::End | Event::Done => {}
                        }
                    }
                }
                Err(e) => return (parts, Err(e)),
            }
        }
        (parts, reader.finish())
    }

    #[test]
    fn parts_come_out_whatever_the_chunking() {
        let parts: [&[u8]; 2] = [b"first", b"second, with --XyZ inside (no line end before it)"];
        let bytes = body(&parts);
        for size in [1, 2, 3, 7, 64, 10_000] {
            let (got, done) = read(&bytes, size);
            assert_eq!(done, Ok(()));
            assert_eq!(got.len(), 2, "chunk size {size}");
            assert_eq!(got[0], b"first");
        }
    }

    #[test]
    fn a_cut_body_is_truncated_not_complete() {
        let bytes = body(&[b"aaaa", b"bbbb"]);
        let cut = &bytes[..bytes.len() - 20];
        let (_, done) = read(cut, 5);
        assert_eq!(done, Err(MultipartError::Truncated { complete: 1 }));
        assert_eq!(read(b"no delimiter at all", 4).1, Err(MultipartError::NoDelimiter));
    }

    #[test]
    fn boundary_parameter() {
        assert_eq!(
            boundary_of("multipart/related; type=\"application/dicom\"; boundary=\"ab:cd\"").as_deref(),
            Some("ab:cd")
        );
        assert_eq!(boundary_of("multipart/related; BOUNDARY=x").as_deref(), Some("x"));
        assert_eq!(boundary_of("application/dicom"), None);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), size in 1usize..300) {
            let _ = read(&bytes, size);
        }

        #[test]
        fn bodies_round_trip(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..500), 1..6), size in 1usize..200) {
            // a part may not contain the delimiter itself
            prop_assume!(parts.iter().all(|p| memmem::find(p, b"\r\n--XyZ").is_none()));
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            let (got, done) = read(&body(&refs), size);
            prop_assert_eq!(done, Ok(()));
            prop_assert_eq!(got, parts);
        }
    }
}
