//! Ruby Chore's log line, for `log-format = "ruby"`: `[<time> (<pid>)] <SEVERITY> :
//! <message>`, the time as Ruby's `Time#to_s` (local, whole seconds), so that what reads
//! Ruby Chore's logs (a grok pattern, an alert on `ERROR :`) reads chore's. The message is
//! chore's own, its fields after it as the text format writes them.

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter. The pid is the process's at set-up (a worker sets up its own).
pub struct RubyLine {
    pid: u32,
}

impl RubyLine {
    pub fn new() -> RubyLine {
        RubyLine {
            pid: std::process::id(),
        }
    }
}

/// Ruby Logger's name for a level (it has no trace).
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for RubyLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let time = crate::title::ruby_time(crate::title::now());
        let severity = severity(event.metadata().level());
        write!(writer, "[{time} ({})] {severity} : ", self.pid)?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_read_as_ruby_loggers() {
        let names: Vec<_> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .iter()
        .map(severity)
        .collect();
        assert_eq!(names, ["ERROR", "WARN", "INFO", "DEBUG", "DEBUG"]);
    }
}
