//! Operating nixdag: the NixOS module (nix/module.nix) and the flake, the plain systemd unit
//! (contrib/nixdag.service), `completions`, the manual pages, `--version`, and `serve --no-metrics`.
//!
//! The module is evaluated by real Nix (`nix-instantiate`) against a small stand-in for nixpkgs' `lib`
//! written here (no nixpkgs can be fetched where the tests run). What that proves and what it does not
//! is said at [`STUB_LIB`]. Units are checked by systemd's own `systemd-analyze verify` and
//! `systemd-analyze security --offline`, and the command lines they generate are run.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// The repository's root (flake.nix, nix/, contrib/).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `nixdag ARGS` (no store needed), its stdout.
fn nixdag(args: &[&str]) -> String {
    run(Command::new(bin()).args(args))
}

/// `curl -s URL` → (status, body).
fn get(url: &str) -> (u16, String) {
    let o = Command::new("curl").args(["-s", "-w", "\n%{http_code}", url]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap_or(0), body.to_string())
}

/// The words of a command line as `systemd` splits ExecStart: blanks separate words, single and double
/// quotes group, `\'` outside quotes is a quote. bash splits the quoting `lib.escapeShellArgs` produces
/// (bare words, `'…'`, `'\''`) the same way; `eval` is safe on it since every `$` is inside single
/// quotes. Specifiers are left as they are (`%d`, `%%`).
fn split_exec(line: &str) -> Vec<String> {
    let out = run(Command::new("bash").args(["-c", r#"eval "set -- $1"; printf '%s\0' "$@""#, "split", line]));
    out.split_terminator('\0').map(String::from).collect()
}

/// systemd's meaning of an ExecStart word: `%d` the credentials directory, `%%` a `%`, `$$` a `$`.
fn unescape_systemd(word: &str, credentials: &Path) -> String {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('%')) | ('$', Some('$')) => {
                out.push(c);
                chars.next();
            }
            ('%', Some('d')) => {
                out.push_str(credentials.to_str().unwrap());
                chars.next();
            }
            ('%', other) => panic!("specifier %{other:?} in {word:?}: not one the module should emit"),
            _ => out.push(c),
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// The module, evaluated against a stand-in lib
// ------------------------------------------------------------------------------------------------

/// A stand-in for the parts of nixpkgs' `lib` the module uses. `escapeShellArg(s)` is nixpkgs' own
/// definition; `mkOption`, `mkIf` and `mkMerge` return the same marked attribute sets as nixpkgs', which
/// [`EVAL`] resolves as the module system would for this module (a false `mkIf` drops its content).
///
/// What evaluating against it does NOT prove: that nixpkgs' real `lib` has these functions with these
/// semantics (a renamed or changed one), the module system's type checking of the values and its merging
/// with other modules (priorities, `mkForce` by the operator, list merging), that NixOS renders
/// `serviceConfig` as the unit [`render_unit`] writes (NixOS has its own renderer), nor that the package
/// builds, nor that the service runs under systemd with this hardening (no systemd manager runs here).
/// The flake's `checks` (module-unit, module-unit-peering: the module in a real NixOS system, its
/// assertions, its unit file built; package) cover all but the last with real nixpkgs; they need the
/// network to fetch it, and have not been run.
const STUB_LIB: &str = r#"
rec {
  types = {
    str = { name = "str"; };
    bool = { name = "bool"; };
    package = { name = "package"; };
    listOf = elem: { name = "listOf"; inherit elem; };
    nullOr = elem: { name = "nullOr"; inherit elem; };
  };
  mkOption = attrs: { _type = "option"; } // attrs;
  mkEnableOption = name: mkOption { type = types.bool; default = false; example = true; description = "Whether to enable ${name}."; };
  mkPackageOption = pkgs: name: _: mkOption { type = types.package; default = pkgs.${name}; description = "The ${name} package to use."; };
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  escapeShellArg = arg:
    let string = toString arg; in
    if builtins.match "[[:alnum:],._+:@%/-]+" string == null
    then "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] string}'"
    else string;
  escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);
}
"#;

/// Evaluate the module with `settings` over its option defaults: `{ options, config }`, the option
/// tree described (type, default) and the config with `mkIf`/`mkMerge` resolved (null when disabled).
const EVAL: &str = r#"
{ modulePath, settings }:
let
  lib = import ./lib.nix;
  pkgs = { nixdag = { outPath = "/nix/store/00000000000000000000000000000000-nixdag-0.1.0"; name = "nixdag-0.1.0"; }; };
  isOption = v: builtins.isAttrs v && (v._type or null) == "option";
  defaults = opts: builtins.mapAttrs (n: v: if isOption v then v.default else defaults v) opts;
  over = base: top: base // builtins.mapAttrs
    (n: v: if builtins.isAttrs v && builtins.isAttrs (base.${n} or null) then over base.${n} v else v) top;
  module = import (/. + modulePath);
  evaluated = module {
    inherit lib pkgs;
    config.services.nixdag = over (defaults evaluated.options.services.nixdag) settings;
  };
  typeName = t: if t ? elem then "${t.name} ${typeName t.elem}" else t.name;
  describe = opts: builtins.mapAttrs
    (n: v: if isOption v then { type = typeName v.type; default = v.default; described = v ? description; } else describe v)
    opts;
  # The module system, as far as this module needs it.
  merge = a: b:
    if builtins.isAttrs a && builtins.isAttrs b then a // builtins.mapAttrs (n: v: if a ? ${n} then merge a.${n} v else v) b
    else if builtins.isList a && builtins.isList b then a ++ b
    else if a == b then a
    else throw "conflicting definitions";
  resolve = v:
    if builtins.isAttrs v && (v._type or null) == "if" then (if v.condition then resolve v.content else null)
    else if builtins.isAttrs v && (v._type or null) == "merge" then
      builtins.foldl' merge { } (builtins.filter (x: x != null) (map resolve v.contents))
    else if builtins.isAttrs v && !(v ? outPath) then
      let r = builtins.mapAttrs (n: resolve) v; in
      builtins.removeAttrs r (builtins.filter (n: r.${n} == null) (builtins.attrNames r))
    else if builtins.isList v then map resolve v
    else v;
in
{ options = describe evaluated.options.services.nixdag; config = resolve evaluated.config; }
"#;

/// The package path the stand-in pkgs gives the module.
const PACKAGE: &str = "/nix/store/00000000000000000000000000000000-nixdag-0.1.0";

/// Evaluate nix/module.nix with these settings (a Nix attribute set) → `{ options, config }`.
fn eval_module(settings: &str) -> Value {
    require_nix();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.nix"), STUB_LIB).unwrap();
    std::fs::write(dir.path().join("eval.nix"), EVAL).unwrap();
    let module = repo().join("nix/module.nix");
    let out = run(Command::new("nix-instantiate")
        .args(["--store", "dummy://", "--eval", "--strict", "--json"])
        .arg(dir.path().join("eval.nix"))
        .args(["--argstr", "modulePath"])
        .arg(&module)
        .args(["--arg", "settings", settings]));
    serde_json::from_str(&out).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The flags `nixdag serve --help` and `nixdag --help` list.
fn known_flags() -> Vec<String> {
    let help = nixdag(&["serve", "--help"]) + &nixdag(&["--help"]);
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string())
        .collect()
}

#[test]
fn the_flake_and_the_module_parse() {
    require_nix();
    for f in ["flake.nix", "nix/module.nix"] {
        run(Command::new("nix-instantiate").args(["--parse"]).arg(repo().join(f)));
    }
    // The flake's shape: a pinned release of nixpkgs, and outputs taking exactly self and nixpkgs.
    let flake = repo().join("flake.nix");
    let expr = format!(
        "let f = import {}; in {{ url = f.inputs.nixpkgs.url; args = builtins.attrNames (builtins.functionArgs f.outputs); }}",
        flake.display()
    );
    let out =
        run(Command::new("nix-instantiate").args(["--store", "dummy://", "--eval", "--strict", "--json", "-E", &expr]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["url"].as_str().unwrap().starts_with("github:NixOS/nixpkgs/nixos-"), "{v}");
    assert_eq!(strings(&v["args"]), ["nixpkgs", "self"]);
}

/// The flake's outputs over a stand-in nixpkgs: `lib` is [`STUB_LIB`] and the few functions the flake
/// adds (`genAttrs`, `optionalString`, `mkDefault` as nixpkgs defines them), `buildRustPackage` and
/// `mkShell` return their arguments, `nixosSystem` the modules it was given. This checks the flake's
/// wiring (which outputs, what the package is built with, what the module imports), not that nixpkgs
/// builds it: the flake's own checks do that.
const FLAKE_EVAL: &str = r#"
{ flakePath }:
let
  flake = import (/. + flakePath);
  stub = import ./lib.nix;
  lib = stub // {
    genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    optionalString = cond: s: if cond then s else "";
    mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
    licenses = { mit = "MIT"; asl20 = "Apache-2.0"; };
    nixosSystem = args: {
      config = { assertions = [ ]; systemd.units."nixdag.service".unit = { modules = builtins.length args.modules; }; };
    };
  };
  pkgsFor = system: {
    inherit lib;
    rustPlatform.buildRustPackage = attrs: attrs // { outPath = "/nix/store/11111111111111111111111111111111-nixdag"; };
    stdenv = { hostPlatform = { inherit system; }; buildPlatform.canExecute = _: true; };
    mkShell = attrs: attrs;
    installShellFiles = "installShellFiles";
    cargo = "cargo"; rustc = "rustc"; clippy = "clippy"; rustfmt = "rustfmt"; nix = "nix"; nodejs = "nodejs";
  };
  nixpkgs = { inherit lib; legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor; };
  self = flake.outputs { inherit self nixpkgs; };
  pkg = self.packages.x86_64-linux.default;
  module = self.nixosModules.default { inherit lib; pkgs = pkgsFor "x86_64-linux"; };
in
{
  package = {
    inherit (pkg) pname version doCheck postInstall nativeBuildInputs;
    lockFile = toString pkg.cargoLock.lockFile;
    src = toString pkg.src;
    mainProgram = pkg.meta.mainProgram;
  };
  systems = builtins.attrNames self.packages;
  checks = builtins.attrNames self.checks.x86_64-linux;
  unitModules = self.checks.x86_64-linux.module-unit.modules;
  shell = self.devShells.x86_64-linux.default.packages;
  moduleImports = map toString module.imports;
  modulePackage = module.services.nixdag.package;
}
"#;

#[test]
fn the_flake_outputs_evaluate_against_stand_ins() {
    require_nix();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.nix"), STUB_LIB).unwrap();
    std::fs::write(dir.path().join("flake-eval.nix"), FLAKE_EVAL).unwrap();
    let out = run(Command::new("nix-instantiate")
        .args(["--store", "dummy://", "--eval", "--strict", "--json"])
        .arg(dir.path().join("flake-eval.nix"))
        .args(["--argstr", "flakePath"])
        .arg(repo().join("flake.nix")));
    let v: Value = serde_json::from_str(&out).unwrap();
    let p = &v["package"];
    assert_eq!(p["pname"], "nixdag");
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"), "read from Cargo.toml");
    assert_eq!(p["doCheck"], false);
    assert_eq!(p["mainProgram"], "nixdag");
    assert_eq!(p["lockFile"], repo().join("Cargo.lock").to_str().unwrap());
    assert_eq!(p["src"], repo().to_str().unwrap());
    assert_eq!(strings(&p["nativeBuildInputs"]), ["installShellFiles"]);
    let post = p["postInstall"].as_str().unwrap();
    for needle in
        ["$out/bin/nixdag completions $shell", "installShellCompletion", "$out/bin/nixdag man man", "installManPage"]
    {
        assert!(post.contains(needle), "postInstall lacks {needle}:\n{post}");
    }
    // postInstall runs what the binary really offers.
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "fish", "zsh"] {
        assert!(!nixdag(&["completions", shell]).is_empty());
    }
    nixdag(&["man", dir.path().join("man").to_str().unwrap()]);
    assert!(dir.path().join("man/nixdag.1").exists());
    assert_eq!(strings(&v["systems"]), ["aarch64-linux", "x86_64-linux"]);
    assert_eq!(strings(&v["checks"]), ["module-unit", "module-unit-peering", "package"]);
    assert_eq!(v["unitModules"], 2, "the flake's module and the system's settings");
    let shell = strings(&v["shell"]);
    for tool in ["cargo", "rustc", "clippy", "rustfmt", "nix", "nodejs"] {
        assert!(shell.iter().any(|s| s == tool), "devShell lacks {tool}");
    }
    assert_eq!(strings(&v["moduleImports"]), [repo().join("nix/module.nix").to_str().unwrap()]);
    // The module's package defaults (mkDefault, overridable) to the flake's own.
    assert_eq!(v["modulePackage"]["_type"], "override");
    assert_eq!(v["modulePackage"]["priority"], 1000);
    assert_eq!(v["modulePackage"]["content"], "/nix/store/11111111111111111111111111111111-nixdag");
}

#[test]
fn the_module_declares_its_options_with_the_binarys_defaults() {
    let v = eval_module("{ }");
    let o = &v["options"];
    let expect = [
        ("enable", "bool", Value::Bool(false)),
        ("package", "package", Value::from(PACKAGE)),
        ("listen", "str", Value::from("127.0.0.1:8080")),
        ("metricsListen", "nullOr str", Value::Null),
        ("storeDir", "str", Value::from("/var/lib/nixdag/store")),
        ("keyFile", "nullOr str", Value::Null),
        ("uploadTokenFile", "nullOr str", Value::Null),
        ("upstreams", "listOf str", serde_json::json!([])),
        ("trustedKeys", "listOf str", serde_json::json!([])),
        ("trustedKeysFile", "nullOr str", Value::Null),
        ("maxSize", "nullOr str", Value::Null),
        ("extraArgs", "listOf str", serde_json::json!([])),
        ("openFirewall", "bool", Value::Bool(false)),
    ];
    for (name, ty, default) in &expect {
        assert_eq!(o[name]["type"], *ty, "{name}: {}", o[name]);
        assert_eq!(o[name]["default"], *default, "{name}");
        assert_eq!(o[name]["described"], true, "{name} has no description");
    }
    let peering = [
        ("enable", "bool", Value::Bool(false)),
        ("listen", "str", Value::from("127.0.0.1:0")),
        ("peers", "listOf str", serde_json::json!([])),
        ("allowPeers", "listOf str", serde_json::json!([])),
        ("discovery", "bool", Value::Bool(true)),
    ];
    for (name, ty, default) in &peering {
        assert_eq!(o["peering"][name]["type"], *ty, "peering.{name}");
        assert_eq!(o["peering"][name]["default"], *default, "peering.{name}");
    }
    let mut names: Vec<&String> = o.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names.len(), expect.len() + 1, "options: {names:?}");
    // The listen defaults are the binary's own.
    let help = nixdag(&["serve", "--help"]);
    assert!(help.contains("[default: 127.0.0.1:8080]"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:0]"), "{help}");
    // Disabled, the module sets nothing.
    assert_eq!(v["config"], Value::Null);
}

#[test]
fn the_module_generates_a_hardened_unit_with_the_expected_command_line() {
    let v = eval_module(
        r#"{
          enable = true;
          listen = "0.0.0.0:8080";
          metricsListen = "127.0.0.1:9108";
          keyFile = "/run/keys/nixdag-key";
          uploadTokenFile = "/run/keys/nixdag-token";
          upstreams = [ "https://cache.example.org" ];
          trustedKeys = [ "cache.example.org-1:2kTqVc=" ];
          trustedKeysFile = "/etc/nixdag/trusted";
          maxSize = "50G";
          extraArgs = [ "--priority" "41" "--tarball-mirror" "http://m.example/a%20b?x=$HOME it's" ];
          openFirewall = true;
        }"#,
    );
    let c = &v["config"];
    let s = &c["systemd"]["services"]["nixdag"];
    let sc = &s["serviceConfig"];
    let argv = split_exec(sc["ExecStart"].as_str().unwrap());
    let creds = Path::new("/run/credentials/nixdag.service");
    let argv: Vec<String> = argv.iter().map(|w| unescape_systemd(w, creds)).collect();
    let want = [
        &format!("{PACKAGE}/bin/nixdag"),
        "--store",
        "/var/lib/nixdag/store",
        "serve",
        "--listen",
        "0.0.0.0:8080",
        "--metrics-listen",
        "127.0.0.1:9108",
        "--key",
        "/run/credentials/nixdag.service/signing-key",
        "--upload-token-file",
        "/run/credentials/nixdag.service/upload-token",
        "--upstream",
        "https://cache.example.org",
        "--trusted-key",
        "cache.example.org-1:2kTqVc=",
        "--trusted-keys-file",
        "/run/credentials/nixdag.service/trusted-keys",
        "--max-size",
        "50G",
        "--priority",
        "41",
        "--tarball-mirror",
        // `%`, `$` and a quote reach the binary as written: doubled for systemd, quoted for the shell.
        "http://m.example/a%20b?x=$HOME it's",
    ];
    assert_eq!(argv, want);
    // Every flag the module emits is one the binary has.
    let known = known_flags();
    for a in argv.iter().filter(|a| a.starts_with("--")) {
        assert!(known.contains(a), "{a} is not a flag of nixdag serve");
    }
    assert_eq!(
        strings(&sc["LoadCredential"]),
        ["signing-key:/run/keys/nixdag-key", "upload-token:/run/keys/nixdag-token", "trusted-keys:/etc/nixdag/trusted"]
    );
    assert_eq!(sc["DynamicUser"], true);
    assert_eq!(sc["StateDirectory"], "nixdag");
    assert_eq!(sc["ReadWritePaths"], serde_json::json!([]), "the store is in the state directory");
    assert_eq!(sc["ProtectSystem"], "strict");
    for key in [
        "ProtectHome",
        "NoNewPrivileges",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateUsers",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "MemoryDenyWriteExecute",
        "LockPersonality",
    ] {
        assert_eq!(sc[key], true, "{key}");
    }
    assert_eq!(sc["CapabilityBoundingSet"], "");
    assert_eq!(strings(&sc["SystemCallFilter"]), ["@system-service", "~@privileged"]);
    assert_eq!(
        strings(&sc["RestrictAddressFamilies"]),
        ["AF_INET", "AF_INET6", "AF_UNIX"],
        "no netlink without peering"
    );
    assert!(sc["LimitNOFILE"].as_u64().unwrap() >= 65536);
    assert_eq!(strings(&s["wantedBy"]), ["multi-user.target"]);
    let fw = &c["networking"]["firewall"];
    assert_eq!(fw["allowedTCPPorts"], serde_json::json!([8080]));
    assert_eq!(fw["allowedUDPPorts"], serde_json::json!([]));
    assert!(c["assertions"].as_array().unwrap().iter().all(|a| a["assertion"] == true), "{}", c["assertions"]);

    // Peering: its flags, netlink for iroh, and its UDP port (and mDNS) in the firewall.
    let v = eval_module(
        r#"{
          enable = true;
          storeDir = "/srv/nixdag";
          peering = { enable = true; listen = "0.0.0.0:4919"; peers = [ "abc@10.0.0.2:4919" ]; allowPeers = [ "abc" ]; };
          openFirewall = true;
        }"#,
    );
    let c = &v["config"];
    let sc = &c["systemd"]["services"]["nixdag"]["serviceConfig"];
    let argv = split_exec(sc["ExecStart"].as_str().unwrap());
    assert_eq!(
        argv[1..],
        [
            "--store",
            "/srv/nixdag",
            "serve",
            "--listen",
            "127.0.0.1:8080",
            "--peering",
            "--peer-listen",
            "0.0.0.0:4919",
            "--peer",
            "abc@10.0.0.2:4919",
            "--allow-peer",
            "abc"
        ]
    );
    assert_eq!(strings(&sc["ReadWritePaths"]), ["/srv/nixdag"]);
    assert_eq!(strings(&sc["LoadCredential"]), Vec::<String>::new());
    assert!(strings(&sc["RestrictAddressFamilies"]).contains(&"AF_NETLINK".to_string()));
    assert_eq!(c["networking"]["firewall"]["allowedUDPPorts"], serde_json::json!([4919, 5353]));

    // Without openFirewall the firewall is left alone; upstreams without trusted keys fail an assertion,
    // and so does opening the firewall for a peer port of 0.
    let v = eval_module(r#"{ enable = true; upstreams = [ "https://c.example" ]; }"#);
    // (`networking.firewall`'s one definition is a false mkIf: no definition at all, for the module system.)
    let networking = v["config"].get("networking");
    assert!(networking.is_none_or(|n| n == &serde_json::json!({})), "{}", v["config"]);
    let failed = |v: &Value| -> Vec<String> {
        v["config"]["assertions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["assertion"] == false)
            .map(|a| a["message"].as_str().unwrap().to_string())
            .collect()
    };
    let f = failed(&v);
    assert!(f.len() == 1 && f[0].contains("trustedKeys"), "{f:?}");
    let f = failed(&eval_module(r#"{ enable = true; openFirewall = true; peering.enable = true; }"#));
    assert!(f.len() == 1 && f[0].contains("peering.listen"), "{f:?}");
}

/// A unit file from the module's `systemd.services.nixdag`, as NixOS writes one (booleans as
/// true/false, a list as one line per element), with `binary` in place of the package's.
fn render_unit(service: &Value, binary: &str) -> String {
    let value = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut unit = String::from("[Unit]\n");
    unit += &format!("Description={}\n", value(&service["description"]));
    unit += &format!("Documentation={}\n", strings(&service["documentation"]).join(" "));
    for key in ["after", "wants"] {
        let k = format!("{}{}", key[..1].to_uppercase(), &key[1..]);
        unit += &format!("{k}={}\n", strings(&service[key]).join(" "));
    }
    unit += "\n[Service]\n";
    for (k, v) in service["serviceConfig"].as_object().unwrap() {
        let lines: Vec<String> = match v {
            Value::Array(a) => a.iter().map(value).collect(),
            other => vec![value(other)],
        };
        for l in lines {
            let l = if k == "ExecStart" { l.replace(&format!("{PACKAGE}/bin/nixdag"), binary) } else { l };
            unit += &format!("{k}={l}\n");
        }
    }
    unit += &format!("\n[Install]\nWantedBy={}\n", strings(&service["wantedBy"]).join(" "));
    unit
}

/// The manual pages of the binary under test, in a MANPATH directory (`man1/`), for `Documentation=`.
fn man_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    nixdag(&["man", dir.path().join("man1").to_str().unwrap()]);
    dir
}

/// `systemd-analyze verify` (which also runs `man` on the Documentation= pages, found in `man`) and the
/// exposure score of `systemd-analyze security --offline`, which must be at most `max`.
fn systemd_checks(unit: &Path, man: &Path, max: f64) {
    let o = Command::new("systemd-analyze").arg("verify").arg(unit).env("MANPATH", man).output();
    let o = o.expect("systemd-analyze (Debian: systemd) is needed to check the units");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify {}: {}{}",
        unit.display(),
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    let out = run(Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(unit));
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(score <= max, "exposure {score} > {max}:\n{out}");
}

#[test]
fn the_module_unit_passes_systemd_analyze() {
    for settings in [
        r#"{ enable = true; keyFile = "/run/keys/k"; upstreams = [ "https://c.example" ]; trustedKeys = [ "c-1:AAAA" ]; }"#,
        r#"{ enable = true; peering = { enable = true; listen = "0.0.0.0:4919"; }; storeDir = "/srv/nixdag"; }"#,
    ] {
        let v = eval_module(settings);
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("nixdag.service");
        std::fs::write(&unit, render_unit(&v["config"]["systemd"]["services"]["nixdag"], bin())).unwrap();
        let man = man_dir();
        systemd_checks(&unit, man.path(), 2.0);
    }
}

#[test]
fn the_module_command_line_starts_the_gateway() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let creds = work.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    // A root-owned key, as an operator keeps it: the service reads the copy systemd puts in %d.
    let (sk, pk) = (work.path().join("key.sec"), work.path().join("key.pub"));
    run(Command::new("nix-store").args(["--generate-binary-cache-key", "ops-test-1"]).arg(&sk).arg(&pk));
    std::fs::copy(&sk, creds.join("signing-key")).unwrap();
    let store = work.path().join("store");
    let v = eval_module(&format!(
        r#"{{ enable = true; storeDir = "{}"; listen = "127.0.0.1:0"; keyFile = "{}"; extraArgs = [ "--priority" "41" ]; }}"#,
        store.display(),
        sk.display()
    ));
    let sc = &v["config"]["systemd"]["services"]["nixdag"]["serviceConfig"];
    assert_eq!(strings(&sc["LoadCredential"]), [format!("signing-key:{}", sk.display())]);
    let argv: Vec<String> =
        split_exec(sc["ExecStart"].as_str().unwrap()).iter().map(|w| unescape_systemd(w, &creds)).collect();
    assert_eq!(argv[0], format!("{PACKAGE}/bin/nixdag"));
    let served = spawn_serve(Command::new(bin()).args(&argv[1..]), 2);
    let mut child = served.child;
    let url = served.lines[0].rsplit(' ').next().unwrap().to_string();
    assert_eq!(served.lines[1], format!("trusted-public-keys = {}", std::fs::read_to_string(&pk).unwrap().trim()));
    let (code, info) = get(&format!("{url}/nix-cache-info"));
    assert_eq!(code, 200);
    assert!(info.contains("Priority: 41"), "{info}");
    assert_eq!(get(&format!("{url}/healthz")), (200, "ok\n".to_string()));
    assert!(store.join("index.redb").exists());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// contrib/nixdag.service's ExecStart line, split.
fn contrib_exec() -> Vec<String> {
    let unit = std::fs::read_to_string(repo().join("contrib/nixdag.service")).unwrap();
    let lines: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("ExecStart=")).collect();
    assert_eq!(lines.len(), 1, "one ExecStart in contrib/nixdag.service");
    split_exec(lines[0])
}

#[test]
fn the_contrib_unit_passes_systemd_analyze() {
    let unit = std::fs::read_to_string(repo().join("contrib/nixdag.service")).unwrap();
    // verify needs the ExecStart binary to exist: the copy names the binary under test.
    assert!(unit.contains("ExecStart=/usr/local/bin/nixdag "));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("nixdag.service");
    std::fs::write(&copy, unit.replace("ExecStart=/usr/local/bin/nixdag ", &format!("ExecStart={} ", bin()))).unwrap();
    let man = man_dir();
    systemd_checks(&copy, man.path(), 2.0);
    for key in ["DynamicUser=yes", "StateDirectory=nixdag", "ProtectSystem=strict", "NoNewPrivileges=yes"] {
        assert!(unit.lines().any(|l| l == key), "{key} missing");
    }
}

#[test]
fn the_contrib_unit_command_line_starts_the_gateway() {
    let mut argv = contrib_exec();
    // The global --store comes before the subcommand, as `nixdag --help` documents it.
    assert_eq!(argv[..4], ["/usr/local/bin/nixdag", "--store", "/var/lib/nixdag/store", "serve"]);
    let known = known_flags();
    for a in argv.iter().filter(|a| a.starts_with("--")) {
        assert!(known.contains(a), "{a} is not a flag of nixdag serve");
    }
    let store = TestStore::new();
    argv[2] = store.path().to_str().unwrap().to_string();
    let listen = argv.iter().position(|a| a == "--listen").expect("the unit names its --listen");
    assert_eq!(argv[listen + 1], "127.0.0.1:8080", "loopback, as the binary's default");
    argv[listen + 1] = "127.0.0.1:0".into();
    let served = spawn_serve(Command::new(bin()).args(&argv[1..]), 2);
    let mut child = served.child;
    let url = served.lines[0].rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{:?}", served.lines);
    let (code, info) = get(&format!("{url}/nix-cache-info"));
    assert_eq!(code, 200);
    assert!(info.starts_with("StoreDir: /nix/store"), "{info}");
    assert_eq!(get(&format!("{url}/healthz")), (200, "ok\n".to_string()));
    child.kill().unwrap();
    child.wait().unwrap();
}

// ------------------------------------------------------------------------------------------------
// Completions, manual pages, --version
// ------------------------------------------------------------------------------------------------

/// Every visible command (`nixdag --help`'s list).
const COMMANDS: &[&str] = &[
    "add",
    "cat",
    "restore",
    "export-car",
    "verify",
    "gc",
    "repack",
    "forget",
    "dedup-stats",
    "fetch-src",
    "serve",
    "key",
    "warm",
    "peer",
    "pin",
    "unpin",
    "snapshot",
    "completions",
];

#[test]
fn completions_name_every_command_in_each_shell() {
    let help = nixdag(&["--help"]);
    for c in COMMANDS {
        assert!(help.lines().any(|l| l.trim_start().starts_with(&format!("{c} "))), "{c} not in --help");
    }
    assert!(!help.lines().any(|l| l.trim_start().starts_with("man ")), "man is a packaging step, hidden");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = nixdag(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for c in COMMANDS {
            assert!(script.contains(c), "{shell} completions lack {c}");
        }
        // Flags as each shell names them (fish: `-l no-metrics`).
        assert!(script.contains("upstream") && script.contains("no-metrics"), "{shell}: serve's flags");
    }
    // bash parses its script (the only one of these shells installed where the tests run).
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nixdag.bash");
    std::fs::write(&f, nixdag(&["completions", "bash"])).unwrap();
    run(Command::new("bash").arg("-n").arg(&f));
    // And, sourced, it completes a subcommand.
    let probe = format!(
        r#"source {}; COMP_WORDS=(nixdag ser); COMP_CWORD=1; COMP_LINE="nixdag ser"; COMP_POINT=10; _nixdag nixdag ser nixdag; printf '%s\n' "${{COMPREPLY[@]}}""#,
        f.display()
    );
    let out = run(Command::new("bash").args(["-c", &probe]));
    assert_eq!(out.trim(), "serve");
    assert!(Command::new(bin()).args(["completions", "tcsh"]).output().unwrap().status.code() == Some(2));
}

#[test]
fn man_pages_have_a_name_section_and_every_flag_of_serve() {
    let dir = man_dir();
    let man1 = dir.path().join("man1");
    for c in COMMANDS.iter().filter(|c| **c != "completions") {
        assert!(man1.join(format!("nixdag-{c}.1")).exists(), "no page for {c}");
    }
    let top = std::fs::read_to_string(man1.join("nixdag.1")).unwrap();
    assert!(top.contains(".SH NAME") && top.contains(".SH SUBCOMMANDS"), "{top}");
    // Rendered as man renders it (roff escapes every dash), the page names each flag of serve --help.
    let page = man1.join("nixdag-serve.1");
    let text = run(Command::new("man").arg("-l").arg(&page).env("MANWIDTH", "200").env("MAN_KEEP_FORMATTING", ""));
    let text: String = text.chars().filter(|c| *c != '\u{8}').collect();
    assert!(text.contains("NAME") && text.contains("nixdag-serve"), "{text}");
    let help = nixdag(&["serve", "--help"]);
    for flag in known_flags().iter().filter(|f| help.contains(f.as_str())) {
        assert!(
            text.contains(flag.as_str())
                || std::fs::read_to_string(&page).unwrap().replace("\\-", "-").contains(flag.as_str()),
            "{flag} not in nixdag-serve(1)"
        );
    }
    // A store or HOME is not needed to write them (a build sandbox has neither).
    let o = Command::new(bin())
        .args(["man"])
        .arg(dir.path().join("again"))
        .env_remove("HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("NIXDAG_STORE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn version_names_the_store_and_pack_formats() {
    let v = nixdag(&["--version"]);
    // The formats docs/FORMAT.md documents: `meta-0` `format`, and the pack header's version.
    let format_md = std::fs::read_to_string(repo().join("docs/FORMAT.md")).unwrap();
    let after = |needle: &str| -> String {
        let rest =
            &format_md[format_md.find(needle).unwrap_or_else(|| panic!("{needle} not in FORMAT.md")) + needle.len()..];
        rest.chars().take_while(|c| c.is_ascii_digit()).collect()
    };
    let store = after("`format` → `u32` format version (= ");
    let pack = after("| version: u32 (= ");
    assert_eq!(v.trim(), format!("nixdag {} (store format {store}, pack format {pack})", env!("CARGO_PKG_VERSION")));
}

// ------------------------------------------------------------------------------------------------
// serve --no-metrics
// ------------------------------------------------------------------------------------------------

#[test]
fn no_metrics_answers_404_on_metrics_and_keeps_healthz() {
    let store = TestStore::new();
    let served = spawn_serve(store.cmd().args(["serve", "--listen", "127.0.0.1:0", "--no-metrics"]), 2);
    let mut child = served.child;
    let url = served.lines[0].rsplit(' ').next().unwrap().to_string();
    assert_eq!(get(&format!("{url}/nix-cache-info")).0, 200);
    assert_eq!(get(&format!("{url}/metrics")).0, 404);
    assert_eq!(get(&format!("{url}/stats")).0, 404, "the report page goes where the metrics go");
    assert_eq!(get(&format!("{url}/healthz")), (200, "ok\n".to_string()));
    child.kill().unwrap();
    child.wait().unwrap();
    // Nowhere else either: --metrics-listen with --no-metrics is refused.
    let o = store.output(&["serve", "--no-metrics", "--metrics-listen", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && err.contains("cannot be used with"), "{err}");
}
