import Foundation
import Testing
import TrancheTestSupport

extension CLIErrorTests {
    @Test(
        "--http-ca-file that cannot be read or holds no certificate stops serve, worker and run at startup, naming it")
    func httpCAFile() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let garbage = directory.appendingPathComponent("garbage.pem")
            try Data("not a certificate\n".utf8).write(to: garbage)
            let missing = directory.appendingPathComponent("missing.pem")
            for command in ["serve", "worker"] {
                for file in [missing, garbage] {
                    let result = try await tranche(
                        [command, "--database", "ca.db", "--http-ca-file", file.path], in: directory)
                    expectRefused(result, ["--http-ca-file", file.path], [command, file.lastPathComponent])
                }
            }
            // A local run too, before it reads its input or makes its state file.
            for file in [missing, garbage] {
                let result = try await tranche(
                    [
                        "run", "--input", "in.ndjson", "--url", "https://example.test/", "--state", "ca.db",
                        "--http-ca-file", file.path,
                    ],
                    in: directory)
                expectRefused(result, ["--http-ca-file", file.path], ["run", file.lastPathComponent])
            }
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("ca.db").path))
        }
    }
}
