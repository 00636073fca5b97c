//! Scenario `login`: K complete logins (TLS, SASL, bind, initial presence, stream close) at
//! bounded concurrency → sessions per second and the server's CPU seconds per 1000 logins.

use std::sync::Arc;
use std::time::Instant;

use crate::report::{Report, show};
use crate::{Ctx, login_many, procstat, server_cpu};

pub async fn run(ctx: &Arc<Ctx>, k: usize, concurrency: usize, users: usize, report: &mut Report) {
    let t = ctx.cfg.timeout;
    let cpu0 = server_cpu(&ctx.args);
    let gen0 = procstat::own_cpu_seconds();
    let start = Instant::now();
    let failures = login_many(
        ctx,
        k,
        concurrency,
        move |i| i % users,
        move |_, session| session.close(t),
    )
    .await;
    let wall = start.elapsed().as_secs_f64();
    let gen_cpu = procstat::own_cpu_seconds() - gen0;
    let server_cpu_s = server_cpu(&ctx.args).zip(cpu0).map(|(b, a)| b - a);

    let ok = k - failures.count();
    let rate = ok as f64 / wall;
    let per_1k = server_cpu_s
        .filter(|_| ok > 0)
        .map(|c| c * 1000.0 / ok as f64);
    println!(
        "login: {ok}/{k} sessions in {wall:.3} s at concurrency {concurrency} ({users} accounts)"
    );
    println!("  sessions/s              {rate:.1}");
    println!("  server CPU              {}", show(server_cpu_s, " s"));
    println!("  server CPU / 1000 login {}", show(per_1k, " s"));
    println!(
        "  generator CPU           {gen_cpu:.3} s ({:.0}% of one core)",
        100.0 * gen_cpu / wall
    );

    report.set("k", k);
    report.set("concurrency", concurrency);
    report.set("accounts", users);
    report.set("ok", ok);
    failures.report(report);
    report.set("wall_s", wall);
    report.set("sessions_per_s", rate);
    report.set("server_cpu_s", server_cpu_s);
    report.set("server_cpu_s_per_1k_logins", per_1k);
    report.set("gen_cpu_s", gen_cpu);
    report.set("gen_cpu_share", gen_cpu / wall);
}
