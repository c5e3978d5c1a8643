//! `chore enqueue`: Ruby Chore's exact file names and contents.

use crate::harness::*;

/// Check `<queue>-<Class>-<pid>-<YYYYmmdd-HHMMSS-micro6>.0.job`; returns the pid.
fn check_ruby_name(name: &str, queue: &str, class: &str) -> u32 {
    let rest = name
        .strip_prefix(&format!("{queue}-{class}-"))
        .unwrap_or_else(|| panic!("{name:?} does not start with {queue}-{class}-"));
    let rest = rest
        .strip_suffix(".0.job")
        .unwrap_or_else(|| panic!("{name:?} does not end with .0.job"));
    let parts: Vec<&str> = rest.split('-').collect();
    assert_eq!(parts.len(), 4, "pid-date-time-micros in {name:?}");
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    assert!(!parts[0].is_empty() && parts[0].bytes().all(|b| b.is_ascii_digit()));
    assert!(digits(parts[1], 8), "YYYYmmdd in {name:?}");
    assert!(digits(parts[2], 6), "HHMMSS in {name:?}");
    assert!(digits(parts[3], 6), "microseconds in {name:?}");
    let (month, day) = (&parts[1][4..6], &parts[1][6..8]);
    assert!(
        ("01"..="12").contains(&month) && ("01"..="31").contains(&day),
        "{name:?}"
    );
    let (h, m, s) = (&parts[2][0..2], &parts[2][2..4], &parts[2][4..6]);
    assert!(h <= "23" && m <= "59" && s <= "60", "{name:?}");
    parts[0].parse().unwrap()
}

#[test]
fn enqueue_writes_ruby_chores_name_and_content() {
    let sb = Sandbox::new("enqueue");
    sb.chorefile("[queues.mail]\nhandler = [\"true\"]\n");
    let name = sb.enqueue("mail", "{\"to\":\"a@example.com\"}");
    check_ruby_name(&name, "mail", "Job");
    let q = sb.queue("mail");
    assert_eq!(q.new_files(), vec![name.clone()]);
    assert_eq!(q.read("new", &name), "{\"to\":\"a@example.com\"}");
    // A body with a class names it, as Ruby Chore's publisher does; the stamp is local time.
    let before = local_date();
    let name = sb.enqueue("mail", r#"{"class":"Foo::BarJob","args":[1]}"#);
    let after = local_date();
    check_ruby_name(&name, "mail", "Foo::BarJob");
    assert_eq!(
        q.read("new", &name),
        r#"{"class":"Foo::BarJob","args":[1]}"#
    );
    let stamp: String = name
        .trim_end_matches(".0.job")
        .rsplitn(4, '-')
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("-");
    assert!(
        before <= stamp && stamp <= after,
        "{name}: stamp {stamp} is not local time between {before} and {after}"
    );
}

/// Local time now as `date +%Y%m%d-%H%M%S`, the format Ruby Chore names files with.
fn local_date() -> String {
    let out = std::process::Command::new("date")
        .arg("+%Y%m%d-%H%M%S")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn enqueue_with_class_wraps_the_args() {
    let sb = Sandbox::new("enqueue-class");
    sb.chorefile("[queues.mail]\nhandler = [\"true\"]\n");
    let names = sb.enqueue_lines(
        &[
            "--class",
            "Mailer::Welcome",
            "mail",
            r#"[1,"two",{"k":null}]"#,
        ],
        None,
        &[],
    );
    assert_eq!(names.len(), 1, "{names:?}");
    let name = &names[0];
    let pid = check_ruby_name(name, "mail", "Mailer::Welcome");
    assert!(pid > 0);
    assert_eq!(
        sb.queue("mail").read("new", name),
        r#"{"class":"Mailer::Welcome","args":[1,"two",{"k":null}]}"#
    );
}

#[test]
fn enqueue_reads_json_lines_from_stdin() {
    let sb = Sandbox::new("enqueue-stdin");
    sb.chorefile("[queues.mail]\nhandler = [\"true\"]\n");
    let cf = sb.chorefile_path();
    let input = "{\"n\":1}\n\n{\"n\":2}\n[3]\n";
    let out = sb.run_ok(
        &["enqueue", "-c", cf.to_str().unwrap(), "mail", "-"],
        Some(input),
    );
    let names: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let q = sb.queue("mail");
    let contents: Vec<String> = names.iter().map(|n| q.read("new", n)).collect();
    assert_eq!(contents, vec!["{\"n\":1}", "{\"n\":2}", "[3]"]);
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "distinct names");
    for n in &names {
        check_ruby_name(n, "mail", "Job");
    }
    // No body at all also means stdin.
    let out = sb.run_ok(
        &[
            "enqueue",
            "-c",
            cf.to_str().unwrap(),
            "--class",
            "K",
            "mail",
        ],
        Some("[1]\n[2]\n"),
    );
    assert_eq!(out.lines().count(), 2);
    assert_eq!(q.new_files().len(), 5);
}

#[test]
fn enqueue_refuses_invalid_json_and_leaves_no_file() {
    let sb = Sandbox::new("enqueue-bad");
    sb.chorefile("[queues.mail]\nhandler = [\"true\"]\n");
    let cf = sb.chorefile_path();
    let out = sb.run(&["enqueue", "-c", cf.to_str().unwrap(), "mail", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JSON"));
    let q = sb.queue("mail");
    assert!(q.new_files().is_empty(), "{:?}", q.new_files());
}

#[test]
fn enqueue_refuses_an_empty_body_even_for_an_http_queue() {
    let sb = Sandbox::new("enqueue-empty");
    sb.chorefile("[queues.web]\nhandler = { kind = \"http\", url = \"http://127.0.0.1:9/\" }\n");
    let cf = sb.chorefile_path();
    for body in ["", "   "] {
        let out = sb.run(&["enqueue", "-c", cf.to_str().unwrap(), "web", body]);
        assert!(!out.status.success(), "{body:?} was taken");
        assert!(String::from_utf8_lossy(&out.stderr).contains("empty body"));
    }
    assert!(sb.queue("web").new_files().is_empty());
}

#[test]
fn enqueue_needs_no_chorefile_for_an_undeclared_queue() {
    let sb = Sandbox::new("enqueue-root");
    let root = sb.root();
    let out = sb.run_ok(
        &[
            "enqueue",
            "--fs-queue-root",
            root.to_str().unwrap(),
            "adhoc",
            "{}",
        ],
        None,
    );
    let name = out.trim().to_string();
    check_ruby_name(&name, "adhoc", "Job");
    assert_eq!(sb.queue("adhoc").new_files(), vec![name]);
}

#[test]
fn enqueued_messages_are_consumed_end_to_end() {
    // enqueue → master → handler, with the class routed and the body untouched.
    let sb = Sandbox::new("enqueue-e2e");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "[queues.mail]\nclasses = {{ Welcome = [{h:?}] }}\n"
    ));
    let names = sb.enqueue_lines(&["--class", "Welcome", "mail", "[\"bob\"]"], None, &[]);
    assert_eq!(names.len(), 1, "{names:?}");
    let id = id_of(&names[0]);
    let mut master = sb.start(&[]);
    master.wait("the job", || !sb.runs("runs.txt").is_empty());
    let r = &sb.runs("runs.txt")[0];
    assert_eq!(r.id, id);
    assert_eq!(r.class, "Welcome");
    assert_eq!(r.body, r#"{"class":"Welcome","args":["bob"]}"#);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn enqueue_while_a_master_runs_never_exposes_a_partial_file() {
    let sb = Sandbox::new("enqueue-atomic");
    sb.script("count.sh", "wc -c | tr -d ' ' >> sizes.txt");
    sb.chorefile("[queues.big]\nhandler = [\"./count.sh\"]\n");
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    let body = format!("{{\"blob\":\"{}\"}}", "y".repeat(1 << 20));
    let input: String = (0..6).map(|_| format!("{body}\n")).collect();
    sb.enqueue_lines(&["big"], Some(&input), &[]);
    let q = sb.queue("big");
    master.wait("six big jobs", || {
        sb.lines("sizes.txt").len() == 6 && q.is_idle()
    });
    for size in sb.lines("sizes.txt") {
        assert_eq!(size, body.len().to_string(), "a handler saw a partial body");
    }
    assert!(
        q.dead().is_empty(),
        "a partial file was taken: {:?}",
        q.dead()
    );
    assert_eq!(master.stop().code(), Some(0));
}
