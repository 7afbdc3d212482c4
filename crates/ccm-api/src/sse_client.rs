//! A small client for ccm's event stream: an incremental SSE parser ([`SseParser`]) and a
//! reader over a `reqwest` response ([`SseReader`]). Used by the `ccm events` command, the
//! SSE benchmark and the tests.

use std::collections::VecDeque;

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A message (`event:`, `id:`, `data:` lines up to a blank line).
    Message(SseMessage),
    /// A comment line (`: heartbeat`).
    Comment(String),
}

/// One SSE message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    /// `id:`, when sent.
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: Option<String>,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

impl SseMessage {
    /// The event type (`message` when the stream gave none).
    pub fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

/// Parses an event stream chunk by chunk (chunks may split lines anywhere).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    current: SseMessage,
    has_data: bool,
    has_fields: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the items they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(end);
            rest = &tail[1..];
            let line = if self.line.is_empty() {
                head
            } else {
                self.line.extend_from_slice(head);
                &self.line[..]
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = String::from_utf8_lossy(line).into_owned();
            self.line.clear();
            self.line_done(&text, &mut out);
        }
        self.line.extend_from_slice(rest);
        out
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<SseItem>) {
        if line.is_empty() {
            if self.has_fields {
                let mut msg = std::mem::take(&mut self.current);
                if self.has_data && msg.data.ends_with('\n') {
                    msg.data.pop();
                }
                out.push(SseItem::Message(msg));
            }
            self.has_data = false;
            self.has_fields = false;
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.push(SseItem::Comment(comment.trim_start().to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.current.data.push_str(value);
                self.current.data.push('\n');
                self.has_data = true;
                self.has_fields = true;
            }
            "event" => {
                self.current.event = Some(value.to_owned());
                self.has_fields = true;
            }
            "id" => {
                self.current.id = Some(value.to_owned());
                self.has_fields = true;
            }
            _ => {} // `retry:` and unknown fields
        }
    }
}

/// Reads items from a streaming HTTP response.
#[derive(Debug)]
pub struct SseReader {
    response: reqwest::Response,
    parser: SseParser,
    ready: VecDeque<SseItem>,
}

impl SseReader {
    /// Wraps a response whose body is an event stream.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            parser: SseParser::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next item; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<SseItem, reqwest::Error>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(Ok(item));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.ready.extend(self.parser.push(&chunk)),
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next message, skipping comments.
    pub async fn next_message(&mut self) -> Option<Result<SseMessage, reqwest::Error>> {
        loop {
            match self.next().await? {
                Ok(SseItem::Message(m)) => return Some(Ok(m)),
                Ok(SseItem::Comment(_)) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_should_parse_whole() {
        let text = b"retry: 2000\n: connected\n\nid: 7\nevent: ccm.worker.created\ndata: {\"a\":1}\n\nevent: reset\r\ndata: x\r\ndata: y\r\n\r\n";
        for split in 1..text.len() {
            let mut p = SseParser::new();
            let mut items = p.push(&text[..split]);
            items.extend(p.push(&text[split..]));
            assert_eq!(items.len(), 3, "split at {split}: {items:?}");
            assert_eq!(items[0], SseItem::Comment("connected".into()));
            assert_eq!(
                items[1],
                SseItem::Message(SseMessage {
                    id: Some("7".into()),
                    event: Some("ccm.worker.created".into()),
                    data: "{\"a\":1}".into(),
                })
            );
            let SseItem::Message(m) = &items[2] else {
                panic!("{items:?}")
            };
            assert_eq!((m.event_type(), m.data.as_str()), ("reset", "x\ny"));
        }
    }
}
