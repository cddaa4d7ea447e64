import Testing

@testable import OrchestratorCore

/// The malloc arena limit `dang` sets at start (the smoke test checks the running daemon's maps).
@Suite struct MallocArenasTests {
    @Test func `one arena unless the environment chooses`() {
        #expect(MallocArenas.limit(environment: [:]) == 1)
        #expect(MallocArenas.limit(environment: ["PATH": "/usr/bin", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"]) == 1)
        #expect(MallocArenas.limit(environment: ["MALLOC_ARENA_MAX": "4"]) == nil)
        #expect(MallocArenas.limit(environment: ["MALLOC_ARENA_MAX": ""]) == nil)
        #expect(MallocArenas.limit(environment: ["GLIBC_TUNABLES": "glibc.malloc.check=0:glibc.malloc.arena_max=2"]) == nil)
        #expect(MallocArenas.apply(environment: ["MALLOC_ARENA_MAX": "4"]) == nil)
    }
}
