//! The `hearth` command: `serve` (the default) or an admin subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: hearth [serve] [--config FILE] [--allow-root]
       hearth user add NAME [--password-file FILE] [--household] [--config FILE]
       hearth user passwd NAME [--password-file FILE] [--config FILE]
       hearth user del NAME [--config FILE]
       hearth user list [--config FILE]
       hearth household add|remove NAME [--config FILE]
       hearth household list [--config FILE]
       hearth device add NAME [--household] [--password-file FILE] [--config FILE]
       hearth device password NAME [--password-file FILE] [--config FILE]
       hearth device remove NAME [--config FILE]
       hearth device list [--config FILE]
       hearth invite [--uses N] [--expires 7d] [--household] [--from NAME]
                     [--note TEXT] [--config FILE]
       hearth invites [revoke ID] [--config FILE]
       hearth check [--config FILE]
       hearth backup FILE [--config FILE]
       hearth --version

With no config file every setting has its default: the domain is
<hostname>.local and the data live in $STATE_DIRECTORY or
~/.local/share/hearth. Log levels: RUST_LOG=debug (or trace).
`serve` refuses to run as root unless given --allow-root
(or allow_root = true in the config file).";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // --config may stand anywhere; take it out first.
    let mut config: Option<PathBuf> = None;
    if let Some(i) = args.iter().position(|a| a == "--config") {
        if i + 1 >= args.len() {
            eprintln!("hearth: --config needs a file\n\n{USAGE}");
            return ExitCode::from(2);
        }
        config = Some(PathBuf::from(args.remove(i + 1)));
        args.remove(i);
    }
    // So may --allow-root; it only matters to `serve`.
    let allow_root = if let Some(i) = args.iter().position(|a| a == "--allow-root") {
        args.remove(i);
        true
    } else {
        false
    };
    let cmd = args.first().map(String::as_str).unwrap_or("serve");
    if matches!(cmd, "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if matches!(cmd, "-V" | "--version") {
        println!("hearth {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut cfg = match hearth::config::Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hearth: {e}");
            return ExitCode::from(2);
        }
    };
    cfg.allow_root |= allow_root;
    match cmd {
        "serve" if args.len() <= 1 => match hearth::server::serve(cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hearth: {e}");
                ExitCode::FAILURE
            }
        },
        "check" if args.len() == 1 => {
            let report = hearth::admin::check(&cfg);
            for line in &report.lines {
                println!("{line}");
            }
            ExitCode::from(report.code)
        }
        "backup" if args.len() == 2 => {
            match hearth::admin::backup_command(&cfg.data_dir, std::path::Path::new(&args[1])) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hearth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "user" => match hearth::admin::user_command(&args[1..], &cfg.data_dir, &cfg.domain) {
            Ok(msg) => {
                if !msg.is_empty() {
                    println!("{msg}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hearth: {e}");
                ExitCode::FAILURE
            }
        },
        "device" => print_result(hearth::admin::device_command(
            &args[1..],
            &cfg.data_dir,
            &cfg.domain,
        )),
        "invite" => print_result(hearth::admin::invite_command(&args[1..], &cfg)),
        "invites" => print_result(hearth::admin::invites_command(&args[1..], &cfg.data_dir)),
        "household" => {
            match hearth::admin::household_command(&args[1..], &cfg.data_dir, &cfg.domain) {
                Ok(msg) => {
                    if !msg.is_empty() {
                        println!("{msg}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hearth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("hearth: unknown command: {}\n\n{USAGE}", args.join(" "));
            ExitCode::from(2)
        }
    }
}

/// Prints an admin command's message (if any) or its error.
fn print_result(result: Result<String, hearth::admin::AdminError>) -> ExitCode {
    match result {
        Ok(msg) => {
            if !msg.is_empty() {
                println!("{msg}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hearth: {e}");
            ExitCode::FAILURE
        }
    }
}
