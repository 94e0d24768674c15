{
  description = "nixdag: a content-addressed chunk store for Nix (NARs and source tarballs as a BLAKE3 UnixFS Merkle DAG)";

  # Pinned to a release branch. There is no flake.lock in the repository: it was written on a machine
  # with no network, where none could be made. The first `nix flake lock` (or any `nix build`) writes
  # one; commit it.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);

      # A NixOS system that runs the module, for the checks: only the nixdag unit file is built, once the
      # system's assertions (the module's among them) hold; building the whole system would check them
      # too, but fetch a kernel.
      nixdagUnit = system: settings:
        let
          machine = nixpkgs.lib.nixosSystem {
            modules = [
              self.nixosModules.default
              {
                nixpkgs.hostPlatform = system;
                services.nixdag = { enable = true; } // settings;
                # Stubs a system needs to evaluate; nothing boots it.
                boot.loader.grub.enable = false;
                fileSystems."/" = { device = "none"; fsType = "tmpfs"; };
                system.stateVersion = "25.11";
              }
            ];
          };
          failed = builtins.filter (a: !a.assertion) machine.config.assertions;
        in
        if failed == [ ] then machine.config.systemd.units."nixdag.service".unit
        else throw (builtins.concatStringsSep "\n" (map (a: a.message) failed));
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "nixdag";
          version = cargoToml.package.version;
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # liblzma and zlib are built from the crates' bundled sources (features "static" in
          # Cargo.toml: tarball recipes depend on those exact versions), so no system library is linked.
          nativeBuildInputs = [ pkgs.installShellFiles ];
          # The test suite needs what a build sandbox lacks: a real Nix store and Nix CLI, npm packages
          # (the independent IPFS verifier) and loopback servers. scripts/test runs it.
          doCheck = false;
          # Completions and man pages come from the binary itself (clap_complete, clap_mangen), so they
          # always match its flags; skipped when cross-compiling, where the binary cannot run here.
          postInstall = pkgs.lib.optionalString (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) ''
            for shell in bash fish zsh; do
              $out/bin/nixdag completions $shell > nixdag.$shell
            done
            installShellCompletion nixdag.bash nixdag.fish nixdag.zsh
            mkdir man
            $out/bin/nixdag man man
            installManPage man/*.1
          '';
          meta = {
            description = cargoToml.package.description;
            license = with pkgs.lib.licenses; [ mit asl20 ];
            mainProgram = "nixdag";
            platforms = systems;
          };
        };
      });

      # The module, with the package of this flake as its default `services.nixdag.package` (nixpkgs
      # has no `nixdag` for nix/module.nix's own default to find).
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.nixdag.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };

      checks = nixpkgs.lib.genAttrs systems (system: {
        package = self.packages.${system}.default;
        # The module evaluated in a real NixOS system (its option types and merging), and the unit
        # file it generates.
        module-unit = nixdagUnit system { };
        module-unit-peering = nixdagUnit system {
          listen = "0.0.0.0:8080";
          upstreams = [ "https://cache.nixos.org" ];
          trustedKeys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
          keyFile = "/run/keys/nixdag-signing-key";
          maxSize = "50G";
          peering = { enable = true; listen = "0.0.0.0:4919"; };
          openFirewall = true;
        };
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/nixdag";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          # nix and nodejs: the integration tests drive real Nix and an npm IPFS verifier.
          packages = with pkgs; [ cargo rustc clippy rustfmt nix nodejs ];
        };
      });
    };
}
