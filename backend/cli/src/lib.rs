//! `kalam`, the command-line client of KalamDB: an interactive shell (line editing,
//! history, completion, aligned results, backslash commands) and a script runner
//! (`-c`, `-f`, stdin) whose exit status says whether every statement succeeded.
//!
//! Exit status: 0 every statement succeeded; 1 a statement or command failed;
//! 2 the server could not be reached, refused the credentials, or the command line
//! was wrong. See `docs/CLI.md`.

mod client;
mod config;
mod render;
mod session;
mod shell;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::client::{Auth, Client, Failure};
use crate::config::{Config, SavedLogin};
use crate::render::OutputFormat;
use crate::session::{Outcome, Session};

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Parser)]
#[command(name = "kalam", version, about = "The command-line client of KalamDB")]
struct Args {
    /// The server [default: http://127.0.0.1:8080, or `url` in ~/.kalam/config.toml]
    #[arg(long, env = "KALAM_URL", global = true)]
    url: Option<String>,
    /// The user to connect as [default: root, or `user` in ~/.kalam/config.toml]
    #[arg(short = 'u', long, env = "KALAM_USER", global = true)]
    user: Option<String>,
    /// The password (asked for, without echo, when a user is given without one).
    /// UNSAFE on the command line: other local users can read a process's
    /// arguments; prefer KALAM_PASSWORD or the prompt
    #[arg(long, env = "KALAM_PASSWORD", hide_env_values = true, global = true)]
    password: Option<String>,
    /// A bearer token (from `kalam login` or `POST /auth/login`)
    #[arg(long, env = "KALAM_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The namespace of unqualified table names
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Run these statements and exit
    #[arg(short = 'c', long = "command", value_name = "SQL", conflicts_with = "file")]
    command: Option<String>,
    /// Run the statements of this file and exit
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// How results are printed: table, json, ndjson or csv [default: table]
    #[arg(long)]
    format: Option<String>,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Log in and save a token (never the password) in ~/.kalam/credentials.toml
    Login,
}

/// The `kalam` program.
pub fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    if matches.value_source("password") == Some(ValueSource::CommandLine) {
        eprintln!(
            "kalam: warning: a password on the command line is visible to other users of this \
             machine (ps, /proc); use KALAM_PASSWORD or the prompt"
        );
    }
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    match run(args) {
        Ok(outcome) => exit_code(outcome),
        Err(message) => {
            eprintln!("kalam: {message}");
            ExitCode::from(2)
        }
    }
}

fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Done | Outcome::Quit => ExitCode::SUCCESS,
        Outcome::Failed => ExitCode::from(1),
        Outcome::Disconnected => ExitCode::from(2),
    }
}

fn run(args: Args) -> Result<Outcome, String> {
    let config = Config::load()?;
    let url = args
        .url
        .clone()
        .or(config.url.clone())
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!("'{url}' is not a server address: use http://host:port"));
    }
    let format = match args.format.as_deref().or(config.format.as_deref()) {
        Some(name) => OutputFormat::parse(name)?,
        None => OutputFormat::Table,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(Action::Login) = args.action {
        return login(&runtime, &args, &config, &url);
    }
    let (auth, user) = resolve_auth(&args, &config, &url)?;
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let interactive = args.command.is_none() && args.file.is_none() && stdin_is_terminal;
    let mut session = Session::new(
        Client::new(&url, auth, args.namespace.clone()),
        format,
        interactive,
    );
    if let Some(sql) = &args.command {
        return Ok(runtime.block_on(session.run_script(sql)));
    }
    if let Some(path) = &args.file {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return Ok(runtime.block_on(session.run_script(&text)));
    }
    if !interactive {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the statements on stdin: {e}"))?;
        return Ok(runtime.block_on(session.run_script(&text)));
    }
    // The shell: check the connection (and read names for completion) first.
    if let Err(failure) = runtime.block_on(session.load_names()) {
        eprintln!("{}", failure.describe(session.client.auth()));
        if failure.is_connection_failure() {
            return Ok(Outcome::Disconnected);
        }
    }
    let greeting = format!(
        "kalam {} connected to {url} as {user}. \\help for help, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );
    Ok(shell::run(&runtime, session, &greeting))
}

/// Who the requests are sent as: `--token`, then `--password`, then a token saved
/// by `kalam login` for this server, then the user given with a password asked for
/// at the terminal; with nothing given, `root` with the empty password (which the
/// server accepts from its own machine only).
fn resolve_auth(args: &Args, config: &Config, url: &str) -> Result<(Auth, String), String> {
    let user = args.user.clone().or(config.user.clone());
    if let Some(token) = &args.token {
        return Ok((
            Auth::Bearer(token.clone()),
            user.unwrap_or_else(|| "the token's user".into()),
        ));
    }
    if let Some(password) = &args.password {
        let user = user.unwrap_or_else(|| "root".into());
        return Ok((
            Auth::Basic {
                user: user.clone(),
                password: password.clone(),
            },
            user,
        ));
    }
    if let Some(saved) = config::saved_login(url, user.as_deref()) {
        return Ok((Auth::Bearer(saved.token), saved.user));
    }
    let user = user.unwrap_or_else(|| "root".into());
    let password = if user == "root" {
        String::new()
    } else {
        ask_password(&user)?
    };
    Ok((
        Auth::Basic {
            user: user.clone(),
            password,
        },
        user,
    ))
}

/// The password of `user`, typed at the terminal without echo. Only asked when
/// stdin is a terminal: a script never waits for a password nobody will type.
fn ask_password(user: &str) -> Result<String, String> {
    let missing = || {
        format!(
            "no password for '{user}': give --password (or KALAM_PASSWORD), --token, or run `kalam login` first"
        )
    };
    if !std::io::stdin().is_terminal() {
        return Err(missing());
    }
    rpassword::prompt_password(format!("Password for {user}: ")).map_err(|_| missing())
}

/// `kalam login`: asks for what is missing, logs in, saves the token.
fn login(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    config: &Config,
    url: &str,
) -> Result<Outcome, String> {
    let user = match args.user.clone().or(config.user.clone()) {
        Some(user) => user,
        None => ask_line("User: ")?,
    };
    let password = match &args.password {
        Some(password) => password.clone(),
        None => ask_password(&user)?,
    };
    match runtime.block_on(client::login(url, &user, &password)) {
        Ok(login) => {
            let path = config::save_login(SavedLogin {
                url: url.to_string(),
                user: user.clone(),
                token: login.token,
                expires_at: login.expires_at.clone(),
            })?;
            let until = login
                .expires_at
                .map(|t| format!(", valid until {t}"))
                .unwrap_or_default();
            println!(
                "Logged in to {url} as {user}; the token is saved in {}{until}",
                path.display()
            );
            Ok(Outcome::Done)
        }
        Err(failure) => {
            let auth = Auth::Basic { user, password };
            eprintln!("{}", failure.describe(&auth));
            Ok(match failure {
                Failure::Cancelled => Outcome::Failed,
                _ => Outcome::Disconnected,
            })
        }
    }
}

/// One line typed at the terminal.
fn ask_line(prompt: &str) -> Result<String, String> {
    if !std::io::stdin().is_terminal() {
        return Err("no user given: use --user".into());
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the user: {e}"))?;
    match line.trim() {
        "" => Err("no user given".into()),
        user => Ok(user.to_string()),
    }
}
