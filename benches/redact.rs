//! `cargo bench --bench redact`: `Redactor::redact` over a 64 KiB journal
//! excerpt (ordinary systemd and application lines with a few secrets in
//! them), the size of what a diagnosis sends to the model. Target: a
//! median under 5 ms per call (about 1 ms expected) on a slow machine.
//!
//! A plain `main` (harness = false): prints the figures, exits non-zero
//! when the median is over the target or a planted secret survives.

use std::time::{Duration, Instant};

use pimainteno::llm::redact::Redactor;

const SIZE: usize = 64 * 1024;
const ROUNDS: usize = 300;
const TARGET_MS: f64 = 5.0;

/// Ordinary lines: none of them may change.
const ORDINARY: &[&str] = &[
    "systemd[1]: myapp.service: Main process exited, code=exited, status=1/FAILURE",
    "systemd[1]: myapp.service: Failed with result 'exit-code'.",
    "systemd[1]: myapp.service: Consumed 1.234s CPU time, 12.5M memory peak.",
    "systemd[1]: myapp.service: Scheduled restart job, restart counter is at 3.",
    "systemd[1]: Started myapp.service - My App.",
    "myapp[{pid}]: INFO  server: listening on 0.0.0.0:8080",
    "myapp[{pid}]: GET /api/v1/items?page=2&sort=name 200 12ms",
    "myapp[{pid}]: WARN  db: slow query (1532 ms): SELECT id, name FROM items WHERE owner = $1",
    "myapp[{pid}]: Traceback (most recent call last):",
    "myapp[{pid}]:   File \"/srv/myapp/app/db.py\", line 88, in connect",
    "myapp[{pid}]:     conn = psycopg2.connect(dsn, connect_timeout=5)",
    "myapp[{pid}]: psycopg2.OperationalError: connection to server at \"db\" (10.0.0.5), port 5432 failed: FATAL:  password authentication failed for user \"app\"",
    "sshd[{pid}]: Accepted publickey for pi from 10.0.0.2 port 50122 ssh2: ED25519 SHA256:uN4kOUZ1ZQy4ZcVVbdDRR9X1xG3Lq0h9r5k8s7d6f5e",
    "sshd[{pid}]: pam_unix(sshd:session): session opened for user pi(uid=1000) by (uid=0)",
    "sshd[{pid}]: Failed password for invalid user admin from 203.0.113.9 port 40022 ssh2",
    "kernel: usb 1-1.3: new high-speed USB device number 4 using dwc_otg",
    "kernel: EXT4-fs (mmcblk0p2): mounted filesystem 2b5d8c1e-9f3a-4c7b-a1d2-0e6f5b4c3a29 r/w with ordered data mode.",
    "dhcpcd[455]: wlan0: leased 192.168.1.23 for 86400 seconds",
    "wpa_supplicant[640]: wlan0: WPA: Key negotiation completed with aa:bb:cc:dd:ee:ff [PTK=CCMP GTK=CCMP]",
    "CRON[{pid}]: (root) CMD (cd / && run-parts --report /etc/cron.hourly)",
    "pm-patch[{pid}]: worktree /var/lib/pimainteno/wt/3f2a9c1e7b4d at 3f2a9c1e7b4d5a6f8e9d0c1b2a3f4e5d6c7b8a9f",
    "pm-summarize[{pid}]: llm: prompt_tokens=1834 completion_tokens=412 total_tokens=2246",
    "apt-get[{pid}]: Get:1 http://deb.debian.org/debian bookworm/main arm64 libssl3 arm64 3.0.15-1~deb12u1 [1,812 kB]",
    "node[{pid}]: at Object.<anonymous> (/srv/web/node_modules/.pnpm/express@4.19.2_a1b2c3d4e5f6/node_modules/express/lib/router/index.js:284:7)",
];

fn main() {
    let secrets = [
        format!("ghp_{}", "a1B2".repeat(9)),
        format!("AKIA{}", "Q7ZX".repeat(4)),
        "Tr0ub4dor3x".to_string(),
        format!("sk-proj-{}", "Ab3d_".repeat(20)),
        "p4ssw0rdDb".to_string(),
    ];
    let planted = [
        format!("myapp[812]: upload with token={} failed", secrets[0]),
        format!("myapp[812]: boto: using access key {}", secrets[1]),
        format!(
            "myapp[812]: settings: {{'PASSWORD': '{}', 'HOST': 'db'}}",
            secrets[2]
        ),
        format!(
            "myapp[812]: POST https://api.openai.com/v1/chat -H \"Authorization: Bearer {}\"",
            secrets[3]
        ),
        format!(
            "myapp[812]: DATABASE_URL=postgres://app:{}@db:5432/app",
            secrets[4]
        ),
    ];

    let mut text = String::with_capacity(SIZE + 256);
    let mut n = 0usize;
    while text.len() < SIZE {
        let ts = format!("Dec 03 10:{:02}:{:02} raspberrypi ", (n / 60) % 60, n % 60);
        let line = if n % 97 == 50 {
            planted[(n / 97) % planted.len()].clone()
        } else {
            ORDINARY[n % ORDINARY.len()].replace("{pid}", &(1000 + n % 7000).to_string())
        };
        text.push_str(&ts);
        text.push_str(&line);
        text.push('\n');
        n += 1;
    }

    let t = Instant::now();
    let redactor = Redactor::new(&[r"corp-[a-z0-9]{8}".to_string()], &[]).unwrap();
    let build = t.elapsed();

    // Warm-up (regex caches), and the checks.
    let out = redactor.redact(&text);
    let mut ok = true;
    for s in &secrets {
        if out.text.contains(s.as_str()) {
            println!("  SECRET SURVIVED: {s}");
            ok = false;
        }
    }
    let changed = text
        .lines()
        .zip(out.text.lines())
        .filter(|(a, b)| a != b)
        .count();
    let planted_lines = text.lines().filter(|l| l.contains("myapp[812]")).count();
    if changed != planted_lines {
        println!("  {changed} lines changed, {planted_lines} hold secrets");
        ok = false;
    }

    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let r = redactor.redact(&text);
            let e = t.elapsed();
            std::hint::black_box(r);
            e
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(times[times.len() / 2]);
    let p95 = ms(times[times.len() * 95 / 100]);
    let max = ms(times[times.len() - 1]);
    println!(
        "{} lines, {:.1} KiB, {} secrets replaced ({:?})",
        n,
        text.len() as f64 / 1024.0,
        out.total(),
        out.counts
    );
    println!("Redactor::new: {:.2} ms", ms(build));
    println!(
        "redact 64 KiB: median {median:.2} ms, p95 {p95:.2} ms, max {max:.2} ms over {ROUNDS} rounds (target < {TARGET_MS} ms)"
    );
    if median > TARGET_MS {
        println!("  OUTSIDE TARGET");
        ok = false;
    }
    if !ok {
        std::process::exit(1);
    }
}
