# NixOS module: `services.nixdag` runs `nixdag serve` (the HTTP binary cache) as a hardened systemd
# service. docs/OPERATIONS.md describes every option; tests/it/ops.rs evaluates this file.
#
# It uses few functions of `lib` (mkOption, mkEnableOption, mkPackageOption, mkIf, types, optional,
# optionals, escapeShellArgs, hasPrefix) and otherwise builtins, so that the test can evaluate it
# against a small stand-in for nixpkgs' lib with a plain `nix-instantiate`.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkIf types optional optionals;
  cfg = config.services.nixdag;

  # The port of an `ADDR:PORT` (`0.0.0.0:8080`, `[::]:8080`), or null.
  portOf = addr:
    let m = builtins.match ".*:([0-9]+)" addr;
    in if m == null then null else builtins.fromJSON (builtins.head m);
  httpPort = portOf cfg.listen;
  peerPort = portOf cfg.peering.listen;

  # systemd reads `%x` as a specifier and `$X` as a variable in ExecStart, also inside quotes: an
  # operator's value keeps its `%` and `$` only if they are doubled.
  literal = s: builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (toString s);
  # Root-owned secrets reach the service through LoadCredential: systemd copies them into a directory
  # only this service's (dynamic) user can read, named `%d` in ExecStart.
  credential = name: "%d/${name}";
  flag = name: value: [ name (literal value) ];
  flags = name: values: builtins.concatMap (flag name) values;

  argv = [ "${cfg.package}/bin/nixdag" "--store" (literal cfg.storeDir) "serve" ]
    ++ flag "--listen" cfg.listen
    ++ optionals (cfg.metricsListen != null) (flag "--metrics-listen" cfg.metricsListen)
    ++ optionals (cfg.keyFile != null) [ "--key" (credential "signing-key") ]
    ++ optionals (cfg.uploadTokenFile != null) [ "--upload-token-file" (credential "upload-token") ]
    ++ flags "--upstream" cfg.upstreams
    ++ flags "--trusted-key" cfg.trustedKeys
    ++ optionals (cfg.trustedKeysFile != null) [ "--trusted-keys-file" (credential "trusted-keys") ]
    ++ optionals (cfg.maxSize != null) (flag "--max-size" cfg.maxSize)
    ++ optionals cfg.peering.enable (
      [ "--peering" ]
      ++ flag "--peer-listen" cfg.peering.listen
      ++ flags "--peer" cfg.peering.peers
      ++ flags "--allow-peer" cfg.peering.allowPeers
      ++ optional (!cfg.peering.discovery) "--no-discovery"
    )
    ++ map literal cfg.extraArgs;

  credentials =
    optional (cfg.keyFile != null) "signing-key:${cfg.keyFile}"
    ++ optional (cfg.uploadTokenFile != null) "upload-token:${cfg.uploadTokenFile}"
    ++ optional (cfg.trustedKeysFile != null) "trusted-keys:${cfg.trustedKeysFile}";

  # Secrets are named as strings, never as Nix paths: a path literal would be copied into the
  # world-readable Nix store.
  secretFile = description: mkOption {
    type = types.nullOr types.str;
    default = null;
    example = "/run/keys/nixdag";
    inherit description;
  };
in
{
  options.services.nixdag = {
    enable = lib.mkEnableOption "the nixdag binary cache gateway (`nixdag serve`)";

    package = lib.mkPackageOption pkgs "nixdag" { };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:8080";
      example = "0.0.0.0:8080";
      description = ''
        Address of the HTTP binary cache (`--listen`). Loopback by default, as the binary's own
        default: serving the LAN is an explicit choice.
      '';
    };

    metricsListen = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "127.0.0.1:9108";
      description = ''
        Serve `/metrics` on this address only (`--metrics-listen`); null serves it on `listen`.
      '';
    };

    storeDir = mkOption {
      type = types.str;
      default = "/var/lib/nixdag/store";
      description = ''
        The store (`--store`). Under /var/lib/nixdag it lives in the service's StateDirectory, owned
        by its dynamic user. Elsewhere it is added to ReadWritePaths, and must be writable by the
        service's user (set `systemd.services.nixdag.serviceConfig.DynamicUser = false` and a
        `User=` that owns it).
      '';
    };

    keyFile = secretFile ''
      The gateway's signing key (`--key`; `name:base64`, as `nix-store --generate-binary-cache-key`
        writes it). Null: a key is created in the store on first start. Read through LoadCredential,
        so the file may be root-owned and mode 0600. Give it as a string: a Nix path would be copied
        into the world-readable Nix store.
      '';

    uploadTokenFile = secretFile ''
        Accept uploads (`nix copy --to`) from any client presenting the token in this file
        (`--upload-token-file`). Read through LoadCredential. Give it as a string: a Nix path would
        be copied into the world-readable Nix store.
      '';

    upstreams = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "https://cache.nixos.org" ];
      description = ''
        Upstream binary caches a missing path is pulled through from (`--upstream`); their narinfos
        must be signed by one of the trusted keys.
      '';
    };

    trustedKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
      description = "Keys whose signatures are trusted (`--trusted-key`), on uploads, upstreams and peers.";
    };

    trustedKeysFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = ''
        More trusted keys, whitespace-separated, `#` comments (`--trusted-keys-file`); read through
        LoadCredential.
      '';
    };

    maxSize = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "50G";
      description = ''
        Disk budget (`--max-size`, K/M/G/T suffixes): over it, the least recently served paths are
        evicted (never pinned or uploaded ones). Null: no budget.
      '';
    };

    peering = {
      enable = lib.mkEnableOption "serving blocks to, and fetching them from, other nixdag nodes over iroh (`--peering`)";

      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:0";
        example = "0.0.0.0:4919";
        description = ''
          UDP address of the peer endpoint (`--peer-listen`). Loopback by default; serving the LAN
          is an explicit `0.0.0.0:PORT` (a fixed port, so that `openFirewall` can open it).
        '';
      };

      peers = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Peers to fetch from (`--peer`): endpoint tickets or `ID@IP:PORT`.";
      };

      allowPeers = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Endpoint ids allowed to fetch blocks (`--allow-peer`); with none, no peer is served.";
      };

      discovery = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Find other nodes on the LAN by mDNS when the endpoint listens on a LAN address (false adds
          `--no-discovery`). Being found grants no access.
        '';
      };
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--allow-upload-from" "10.0.0.0/8" "--nar-compression" "zstd" ];
      description = "More arguments of `nixdag serve` (`nixdag serve --help`), appended as given.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the HTTP port of `listen` in the firewall, and with peering on the UDP port of
        `peering.listen` (and mDNS, UDP 5353, while `peering.discovery` is on).
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.upstreams == [ ] || cfg.trustedKeys != [ ] || cfg.trustedKeysFile != null;
        message = "services.nixdag.upstreams needs trustedKeys or trustedKeysFile: nothing unsigned is taken from upstreams.";
      }
      {
        assertion = !cfg.openFirewall || (httpPort != null && httpPort != 0);
        message = "services.nixdag.openFirewall needs a fixed port in services.nixdag.listen.";
      }
      {
        assertion = !(cfg.openFirewall && cfg.peering.enable) || (peerPort != null && peerPort != 0);
        message = "services.nixdag.openFirewall with peering needs a fixed port in services.nixdag.peering.listen (not :0).";
      }
    ];

    systemd.services.nixdag = {
      description = "nixdag binary cache gateway";
      documentation = [ "man:nixdag-serve(1)" ];
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];

      serviceConfig = {
        Type = "exec";
        ExecStart = lib.escapeShellArgs argv;
        Restart = "on-failure";
        RestartSec = "5s";
        # SIGTERM drains the open connections; anything still running after this long is killed.
        TimeoutStopSec = "30s";

        DynamicUser = true;
        StateDirectory = "nixdag";
        StateDirectoryMode = "0750";
        WorkingDirectory = "/var/lib/nixdag";
        UMask = "0077";
        LoadCredential = credentials;
        ReadWritePaths = optional (!lib.hasPrefix "/var/lib/nixdag/" cfg.storeDir) cfg.storeDir;
        # The gateway raises its soft open-file limit to the hard one: a descriptor per connection.
        LimitNOFILE = 65536;

        # Hardening: writes only its state, sees no home, devices or other processes, gains no
        # privilege, and makes only the system calls of an ordinary network service.
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        PrivateMounts = true;
        # Not ProcSubset=pid: a new signing key is named after /proc/sys/kernel/hostname, and iroh
        # (peering) reads /proc/net/route.
        ProtectProc = "invisible";
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        # AF_UNIX for name lookups (nscd, systemd-resolved). Peering adds AF_NETLINK: iroh lists the
        # interfaces and watches routes over netlink (netwatch), and so does getifaddrs().
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ] ++ optional cfg.peering.enable "AF_NETLINK";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        SystemCallErrorNumber = "EPERM";
        DevicePolicy = "closed";
      };
    };

    networking.firewall = mkIf cfg.openFirewall {
      allowedTCPPorts = [ httpPort ];
      allowedUDPPorts = optionals cfg.peering.enable ([ peerPort ] ++ optional cfg.peering.discovery 5353);
    };
  };
}
