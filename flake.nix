{
  description = "nixdag: a content-addressed chunk store for Nix (NARs and source tarballs as a BLAKE3 UnixFS Merkle DAG)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "nixdag";
          version = cargoToml.package.version;
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # lzma-sys (xz uploads) links the system liblzma when pkg-config finds it.
          nativeBuildInputs = [ pkgs.pkg-config ];
          buildInputs = [ pkgs.xz ];
          # The test suite needs network access (npm IPFS verifiers) and a real Nix store.
          doCheck = false;
          meta = {
            description = cargoToml.package.description;
            license = with pkgs.lib.licenses; [ mit asl20 ];
            mainProgram = "nixdag";
            platforms = systems;
          };
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
          packages = with pkgs; [ cargo rustc clippy rustfmt nodejs nix pkg-config xz ];
        };
      });
    };
}
