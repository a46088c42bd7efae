//! Stack-trace parsing for `cause.exceptions`: the text formats of Java (and PHP), Python, JavaScript, .NET and Go.

use std::borrow::Cow;

/// One entry of `cause.exceptions` before IDs are assigned.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Exception<'a> {
    pub ty: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub remote: bool,
    /// Index, in the same list, of the exception that caused this one.
    pub cause: Option<usize>,
    pub stack: Vec<Frame<'a>>,
}

/// One stack frame: file, line (0 when unknown) and function.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Frame<'a> {
    pub path: &'a str,
    pub line: i64,
    pub label: &'a str,
}

impl<'a> Exception<'a> {
    pub fn new(
        ty: impl Into<Cow<'a, str>>,
        message: impl Into<Cow<'a, str>>,
        remote: bool,
    ) -> Self {
        Exception {
            ty: ty.into(),
            message: message.into(),
            remote,
            cause: None,
            stack: Vec::new(),
        }
    }
}

/// Appends the exception of one `exception` event, plus the chained causes its stack trace names.
/// `language` is the resource's `telemetry.sdk.language`; unknown languages keep no frames.
pub(super) fn push_exception<'a>(
    out: &mut Vec<Exception<'a>>,
    ty: &'a str,
    message: &'a str,
    stacktrace: &'a str,
    remote: bool,
    language: &str,
) {
    let top = out.len();
    out.push(Exception::new(ty, message, remote));
    if stacktrace.is_empty() {
        return;
    }
    match language {
        // The PHP SDK prints stack traces in Java's format (Collector cause.go).
        "java" | "php" => java(stacktrace, out, top),
        "python" => python(stacktrace, out, top),
        "javascript" | "nodejs" => javascript(stacktrace, out, top),
        "dotnet" => dotnet(stacktrace, out, top),
        "go" => go(stacktrace, out, top),
        _ => {}
    }
}

/// Adds a chained exception and links `cur` to it; returns the new index.
fn chain<'a>(out: &mut Vec<Exception<'a>>, cur: usize, text: Cow<'a, str>) -> usize {
    let remote = out[cur].remote;
    let (ty, message) = match text {
        Cow::Borrowed(t) => {
            let (ty, msg) = split_type_message(t);
            (Cow::Borrowed(ty), Cow::Borrowed(msg))
        }
        Cow::Owned(t) => {
            let (ty, msg) = split_type_message(&t);
            (Cow::Owned(ty.to_owned()), Cow::Owned(msg.to_owned()))
        }
    };
    out.push(Exception::new(ty, message, remote));
    let new = out.len() - 1;
    out[cur].cause = Some(new);
    new
}

/// `"pkg.Type: message"` → (`pkg.Type`, `message`); no colon means no message.
fn split_type_message(text: &str) -> (&str, &str) {
    match text.split_once(':') {
        Some((ty, msg)) => (ty, msg.strip_prefix(' ').unwrap_or(msg)),
        None => (text, ""),
    }
}

/// Java (and PHP): a header line, `\tat pkg.Class.method(File.java:42)` frames, and
/// `Caused by: Type: message` sections that start chained exceptions.
fn java<'a>(trace: &'a str, out: &mut Vec<Exception<'a>>, top: usize) {
    let mut cur = top;
    // The first line repeats the top-level type and message.
    let mut lines = trace.lines().skip(1).peekable();
    while let Some(line) = lines.next() {
        if let Some(frame) = java_frame(line) {
            out[cur].stack.push(frame);
        } else if let Some(rest) = line.strip_prefix("Caused by: ") {
            // A message may span lines: take everything up to the next frame or marker.
            let mut text = Cow::Borrowed(rest);
            while let Some(next) = lines.peek() {
                if java_frame(next).is_some()
                    || next.starts_with("Caused by: ")
                    || next.trim_start().starts_with("...")
                {
                    break;
                }
                let owned = text.to_mut();
                owned.push('\n');
                owned.push_str(next);
                lines.next();
            }
            cur = chain(out, cur, text);
        }
        // Anything else ("... 5 more", "Suppressed: ...") is skipped.
    }
}

/// One `\tat label(path:line)` frame, without its class-loader or module prefix.
fn java_frame(line: &str) -> Option<Frame<'_>> {
    let body = line.strip_prefix("\tat ")?.strip_suffix(')')?;
    let open = body.find('(')?;
    let mut label = &body[..open];
    if let Some(slash) = label.find('/') {
        // Class-loader or module prefix ("app//com.x.Y.m", "java.base/java.lang.Thread.run").
        label = &label[slash + 1..];
    }
    let inner = &body[open + 1..];
    let (path, line) = match inner.split_once(':') {
        Some((path, line)) => (path, line.parse().unwrap_or(0)),
        None => (inner, 0),
    };
    Some(Frame { path, line, label })
}

const PY_DURING: &str = "During handling of the above exception, another exception occurred:";
const PY_DIRECT: &str = "The above exception was the direct cause of the following exception:";

/// Python tracebacks: `  File "path", line N, in label` frames, innermost last, and earlier
/// exceptions before a "During handling…" or "The above exception…" marker.
fn python<'a>(trace: &'a str, out: &mut Vec<Exception<'a>>, top: usize) {
    // Tracebacks print the innermost frame last, and chained exceptions come first: read upwards.
    let lines: Vec<&'a str> = trace.split('\n').collect();
    let mut cur = top;
    // The last non-empty line is the top-level "Type: message".
    let Some(mut i) = lines.iter().rposition(|l| !l.trim().is_empty()) else {
        return;
    };
    while i > 0 {
        i -= 1;
        let line = lines[i];
        if let Some(frame) = python_frame(line) {
            out[cur].stack.push(frame);
        } else if line.starts_with(PY_DURING) || line.starts_with(PY_DIRECT) {
            // The earlier exception's text sits above this marker, after its last frame's code lines.
            let Some(file) = lines[..i].iter().rposition(|l| l.starts_with("  File ")) else {
                return;
            };
            let text: Vec<&str> = lines[file + 1..i]
                .iter()
                .copied()
                .skip_while(|l| l.starts_with("    "))
                .collect();
            let end = text
                .iter()
                .rposition(|l| !l.trim().is_empty())
                .map_or(0, |e| e + 1);
            if end == 0 || !text[0].contains(':') {
                return; // malformed: no "Type: message" line
            }
            let text = if end == 1 {
                Cow::Borrowed(text[0])
            } else {
                Cow::Owned(text[..end].join("\n"))
            };
            cur = chain(out, cur, text);
            i = file + 1; // the loop steps back onto the File line
        }
    }
}

/// One `  File "path", line N, in label` frame.
fn python_frame(line: &str) -> Option<Frame<'_>> {
    let rest = line.strip_prefix("  File \"")?;
    let (path, rest) = rest.split_once("\", line ")?;
    let (number, label) = match rest.split_once(", in ") {
        Some((n, label)) => (n, label),
        None => (rest, ""),
    };
    Some(Frame {
        path,
        line: number.trim().parse().unwrap_or(0),
        label,
    })
}

/// Node.js: `    at label (file:line:column)` or `    at file:line:column` frames.
fn javascript<'a>(trace: &'a str, out: &mut [Exception<'a>], top: usize) {
    for line in trace.lines().skip(1) {
        let Some(body) = line.strip_prefix("    at ") else {
            continue;
        };
        let (label, location) = match (body.rfind('('), body.strip_suffix(')')) {
            (Some(open), Some(inner)) => (body[..open].trim_end(), &inner[open + 1..]),
            _ => ("", body),
        };
        // "file:line:column"; the file itself may contain colons (URLs, drive letters).
        let mut path = location;
        let mut number = 0;
        if let Some((head, _column)) = location.rsplit_once(':')
            && let Some((file, line_text)) = head.rsplit_once(':')
            && let Ok(n) = line_text.parse()
        {
            path = file;
            number = n;
        } else if !location.contains(':') && location.contains("native") {
            path = "native";
        }
        if !path.is_empty() || !label.is_empty() || number != 0 {
            out[top].stack.push(Frame {
                path,
                line: number,
                label,
            });
        }
    }
}

/// `.NET`: `   at Label(args) in path:line N` frames, or `at Label()` without a location.
fn dotnet<'a>(trace: &'a str, out: &mut [Exception<'a>], top: usize) {
    for line in trace.lines().skip(1) {
        let Some(body) = line.trim().strip_prefix("at ") else {
            continue;
        };
        if let Some((label, location)) = body.split_once(" in ") {
            let (path, number) = match location.rsplit_once(':') {
                Some((path, n)) => {
                    let n = n.strip_prefix("line").unwrap_or(n).trim();
                    (path, n.parse().unwrap_or(0))
                }
                None => (location, 0),
            };
            out[top].stack.push(Frame {
                path,
                line: number,
                label,
            });
        } else if let Some(close) = body.rfind(')') {
            out[top].stack.push(Frame {
                path: "",
                line: 0,
                label: &body[..=close],
            });
        }
    }
}

/// Go (`runtime/debug.Stack`): a function line followed by a tab-indented `path:line +0x…` line.
fn go<'a>(trace: &'a str, out: &mut [Exception<'a>], top: usize) {
    let mut lines = trace.lines().skip(1).filter(|l| !is_go_noise(l)).peekable();
    while let Some(label) = lines.next() {
        if label.starts_with('\t') {
            continue; // a location without its function line
        }
        let Some(location) = lines.next_if(|l| l.starts_with('\t')) else {
            continue;
        };
        // "\t/path/file.go:42 +0x1d"
        let location = location.trim_start();
        let location = location.split(' ').next().unwrap_or(location);
        let (path, number) = match location.rsplit_once(':') {
            Some((path, n)) => (path, n.parse().unwrap_or(0)),
            None => (location, 0),
        };
        out[top].stack.push(Frame {
            path,
            line: number,
            label,
        });
    }
}

/// Blank lines and goroutine headers ("goroutine 7 [running]:") carry no frame.
fn is_go_noise(line: &str) -> bool {
    line.trim().is_empty() || (line.starts_with("goroutine ") && line.ends_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(trace: &'a str, language: &str) -> Vec<Exception<'a>> {
        let mut out = Vec::new();
        push_exception(&mut out, "T", "m", trace, false, language);
        out
    }

    #[test]
    fn java_frames_and_caused_by_chain() {
        let trace = "java.lang.IllegalStateException: outer\n\
            \tat com.example.App.run(App.java:42)\n\
            \tat java.base/java.lang.Thread.run(Thread.java:833)\n\
            Caused by: java.io.IOException: disk\nfull\n\
            \tat com.example.Disk.write(Disk.java)\n\
            \t... 2 more\n";
        let ex = parse(trace, "java");
        assert_eq!(ex.len(), 2);
        assert_eq!(
            ex[0].stack[1],
            Frame {
                path: "Thread.java",
                line: 833,
                label: "java.lang.Thread.run"
            }
        );
        assert_eq!(ex[0].cause, Some(1));
        assert_eq!(ex[1].ty, "java.io.IOException");
        assert_eq!(ex[1].message, "disk\nfull");
        assert_eq!(
            ex[1].stack,
            vec![Frame {
                path: "Disk.java",
                line: 0,
                label: "com.example.Disk.write"
            }]
        );
    }

    #[test]
    fn python_reads_upwards_and_chains() {
        let trace = "Traceback (most recent call last):\n  File \"/app/a.py\", line 3, in load\n    open(p)\nFileNotFoundError: gone\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"/app/b.py\", line 9, in main\n    load()\n  File \"/app/b.py\", line 5, in load\n    raise ValueError(\"bad\")\nValueError: bad\n";
        let ex = parse(trace, "python");
        assert_eq!(ex.len(), 2);
        assert_eq!(
            ex[0].stack[0],
            Frame {
                path: "/app/b.py",
                line: 5,
                label: "load"
            }
        );
        assert_eq!(ex[0].stack[1].line, 9);
        assert_eq!(ex[1].ty, "FileNotFoundError");
        assert_eq!(ex[1].message, "gone");
        assert_eq!(
            ex[1].stack,
            vec![Frame {
                path: "/app/a.py",
                line: 3,
                label: "load"
            }]
        );
    }

    #[test]
    fn javascript_dotnet_and_go_frames() {
        let js = parse(
            "Error: x\n    at Object.<anonymous> (/app/i.js:10:15)\n    at /app/j.js:3:9\n    at new Promise (<anonymous>)",
            "javascript",
        );
        assert_eq!(
            js[0].stack[0],
            Frame {
                path: "/app/i.js",
                line: 10,
                label: "Object.<anonymous>"
            }
        );
        assert_eq!(
            js[0].stack[1],
            Frame {
                path: "/app/j.js",
                line: 3,
                label: ""
            }
        );
        assert_eq!(
            js[0].stack[2],
            Frame {
                path: "<anonymous>",
                line: 0,
                label: "new Promise"
            }
        );
        let net = parse(
            "System.Exception: x\n   at App.Main(String[] a) in /src/P.cs:line 12\n   at System.Foo()",
            "dotnet",
        );
        assert_eq!(
            net[0].stack[0],
            Frame {
                path: "/src/P.cs",
                line: 12,
                label: "App.Main(String[] a)"
            }
        );
        assert_eq!(
            net[0].stack[1],
            Frame {
                path: "",
                line: 0,
                label: "System.Foo()"
            }
        );
        let go = parse(
            "panic: x\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/main.go:10 +0x1d\n",
            "go",
        );
        assert_eq!(
            go[0].stack,
            vec![Frame {
                path: "/app/main.go",
                line: 10,
                label: "main.main()"
            }]
        );
    }
}
