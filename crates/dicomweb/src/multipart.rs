//! A streaming reader of `multipart/related` bodies (RFC 2046): chunks go in as they arrive
//! from the network, parts come out as header blocks and data slices. Data slices share
//! the chunks' memory (no copy of an instance's bytes); what is kept between chunks is at
//! most a delimiter's length or one part's header block. Any input, however malformed,
//! ends in an error or in events; it never panics.

use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// What the reader found in the bytes fed so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A part begins; its headers, names lower-cased.
    Begin(Vec<(String, String)>),
    /// Bytes of the current part's body.
    Data(Bytes),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Its searcher, built once (a chunk is often only 8 KiB: building it per search
    /// would cost as much as the search).
    finder: memmem::Finder<'static>,
    /// Bytes carried to the next chunk: a possible start of a delimiter, or an
    /// incomplete header block.
    carry: BytesMut,
    state: State,
    complete: usize,
}

impl Reader {
    pub fn new(boundary: &str) -> Reader {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The body's first delimiter may come without the leading CRLF: start as if one
        // had been read.
        let finder = memmem::Finder::new(&delimiter).into_owned();
        Reader { delimiter, finder, carry: BytesMut::from(&b"\r\n"[..]), state: State::Preamble, complete: 0 }
    }

    /// Parts completed so far.
    pub fn complete(&self) -> usize {
        self.complete
    }

    /// Feeds a copy of `bytes` (see [`Reader::feed_bytes`]).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, MultipartError> {
        self.feed_bytes(Bytes::copy_from_slice(bytes))
    }

    /// Feeds the next chunk of the body; returns what it completed.
    pub fn feed_bytes(&mut self, chunk: Bytes) -> Result<Vec<Event>, MultipartError> {
        let mut events = Vec::new();
        self.feed_into(chunk, &mut events)?;
        Ok(events)
    }

    /// Feeds the next chunk of the body; appends what it completed to `events` (a vector
    /// the caller reuses from chunk to chunk).
    pub fn feed_into(&mut self, chunk: Bytes, events: &mut Vec<Event>) -> Result<(), MultipartError> {
        let mut input = chunk;
        if self.state == State::Body && !self.carry.is_empty() && input.len() + 1 >= self.delimiter.len() {
            input = self.across_the_seam(input, events);
        }
        let mut window = if self.carry.is_empty() {
            input
        } else {
            self.carry.extend_from_slice(&input);
            self.carry.split().freeze()
        };
        loop {
            let consumed = match self.state {
                State::Preamble => self.preamble(&window),
                State::Headers => self.headers(&window, events)?,
                State::Body => self.body(&window, events),
                State::Finished => Some(window.len()),
            };
            match consumed {
                Some(n) if n < window.len() => window = window.slice(n..),
                Some(_) => return Ok(()),
                None => {
                    self.carry.extend_from_slice(&window);
                    return Ok(());
                }
            }
        }
    }

    /// Ok once the closing delimiter was read; otherwise the body was cut (or never was
    /// multipart).
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.state {
            State::Finished => Ok(()),
            State::Preamble if self.complete == 0 => Err(MultipartError::NoDelimiter),
            _ => Err(MultipartError::Truncated { complete: self.complete }),
        }
    }

    /// A delimiter may begin in the carried bytes and end in `input`: look for it in the
    /// carry plus the first bytes of `input` only (a short copy), so the rest of the chunk
    /// is never copied. Returns what is left of `input`.
    fn across_the_seam(&mut self, input: Bytes, events: &mut Vec<Event>) -> Bytes {
        let carried = self.carry.len();
        let mut seam = self.carry.to_vec();
        seam.extend_from_slice(&input[..self.delimiter.len() - 1]);
        match self.finder.find(&seam) {
            Some(at) if at < carried => {
                let data = self.carry.split_to(at).freeze();
                self.carry.clear();
                if !data.is_empty() {
                    events.push(Event::Data(data));
                }
                self.end_part(events);
                input.slice(at + self.delimiter.len() - carried..)
            }
            _ => {
                // no delimiter starts in the carry: it is the part's data
                events.push(Event::Data(self.carry.split().freeze()));
                input
            }
        }
    }

    fn end_part(&mut self, events: &mut Vec<Event>) {
        events.push(Event::End);
        self.complete += 1;
        self.state = State::Headers;
    }

    /// Each step answers how many bytes of `window` it consumed, or `None` when it needs
    /// more bytes (the window is then carried).
    fn preamble(&mut self, window: &Bytes) -> Option<usize> {
        match self.finder.find(window) {
            Some(at) => {
                self.state = State::Headers;
                Some(at + self.delimiter.len())
            }
            // keep only what may start a delimiter
            None if window.len() > self.delimiter.len() => Some(window.len() - self.delimiter.len()),
            None => None,
        }
    }

    fn headers(&mut self, window: &Bytes, events: &mut Vec<Event>) -> Result<Option<usize>, MultipartError> {
        if window.len() < 2 {
            return Ok(None);
        }
        // `--` right after the delimiter closes the body
        if window.starts_with(b"--") {
            self.state = State::Finished;
            events.push(Event::Done);
            return Ok(Some(window.len()));
        }
        // The delimiter line ends with CRLF (after optional padding), then header lines,
        // then an empty line.
        let Some(end) = memmem::find(window, b"\r\n\r\n") else {
            if window.len() > MAX_HEADERS {
                return Err(MultipartError::HeadersTooLarge(MAX_HEADERS));
            }
            return Ok(None);
        };
        if end > MAX_HEADERS {
            return Err(MultipartError::HeadersTooLarge(MAX_HEADERS));
        }
        let block = String::from_utf8_lossy(&window[..end]);
        let mut headers = Vec::new();
        // the first line is the rest of the delimiter line (padding)
        for line in block.split("\r\n").skip(1) {
            if line.is_empty() {
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(MultipartError::BadHeader)?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        events.push(Event::Begin(headers));
        self.state = State::Body;
        Ok(Some(end + 4))
    }

    fn body(&mut self, window: &Bytes, events: &mut Vec<Event>) -> Option<usize> {
        match self.finder.find(window) {
            Some(at) => {
                if at > 0 {
                    events.push(Event::Data(window.slice(..at)));
                }
                self.end_part(events);
                Some(at + self.delimiter.len())
            }
            None => {
                // everything but a possible delimiter start is the part's data
                let keep = (self.delimiter.len() - 1).min(window.len());
                let ready = window.len() - keep;
                if ready > 0 {
                    events.push(Event::Data(window.slice(..ready)));
                }
                // the tail is carried: consumed up to it, then `None` keeps the rest
                if ready == 0 { None } else { Some(ready) }
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
                            Event::Data(d) => parts.last_mut().unwrap().extend_from_slice(&d),
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
