//! Every sub-command's `--help` says what it does and shows an example.

mod common;

use common::agent;

#[test]
fn every_subcommand_shows_an_example() {
    let (code, out, _) = agent(&["--help"]);
    assert_eq!(code, 0);
    let commands: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 15, "{out}");
    for command in commands {
        let (code, help, _) = agent(&[command, "--help"]);
        assert_eq!(code, 0, "{command}");
        assert!(help.contains("Example"), "{command} --help shows no example:\n{help}");
    }
}
