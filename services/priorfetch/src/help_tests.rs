//! Every subcommand, argument and flag of `priorfetch` has help text: an empty `--help`
//! entry leaves an operator guessing.

use clap::CommandFactory;

/// `path: what is missing` for `command` and everything under it.
fn missing_help(command: &clap::Command, path: &str, found: &mut Vec<String>) {
    for arg in command.get_arguments() {
        let builtin = matches!(arg.get_id().as_str(), "help" | "version");
        let empty = arg.get_help().is_none_or(|h| h.to_string().trim().is_empty());
        if !builtin && empty {
            found.push(format!("{path}: argument '{}' has no help", arg.get_id()));
        }
    }
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none_or(|a| a.to_string().trim().is_empty()) {
            found.push(format!("{sub_path}: no about text"));
        }
        missing_help(sub, &sub_path, found);
    }
}

#[test]
fn every_subcommand_and_argument_has_help() {
    let command = super::Cli::command();
    command.clone().debug_assert();
    let mut found = Vec::new();
    missing_help(&command, "priorfetch", &mut found);
    assert!(found.is_empty(), "help text missing:\n{}", found.join("\n"));
}

#[test]
fn the_walk_notices_an_argument_without_help() {
    let command = clap::Command::new("t").arg(clap::Arg::new("bare").long("bare"));
    let mut found = Vec::new();
    missing_help(&command, "t", &mut found);
    assert_eq!(found, ["t: argument 'bare' has no help"]);
}
