#if canImport(CMalloc)
import CMalloc
#endif

/// How many malloc arenas the process uses (glibc).
///
/// By default glibc gives each new thread an arena of its own, up to eight per core. The daemon's
/// threads (MQTT, the detection loop, the record writer, the API's event loops, the cooperative
/// pool) each allocate in theirs, so memory freed on one thread stays reserved for that thread's
/// arena, and the pages of every arena stay resident. With one arena, 10,000 tags take 7–8 MiB
/// less resident memory and the same CPU (docs/performance.md, "Memory"); each thread's cache of
/// small blocks (tcache) keeps most allocations off the arena's lock.
///
/// `dang` applies it first thing, before any other thread starts. An operator who sets
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the environment keeps their own choice.
package enum MallocArenas {
    /// The arena count `dang` uses unless the environment chooses.
    package static let `default` = 1

    /// The arena limit to apply, or nil when the environment already chooses one.
    package static func limit(environment: [String: String]) -> Int? {
        if environment["MALLOC_ARENA_MAX"] != nil { return nil }
        if let tunables = environment["GLIBC_TUNABLES"], tunables.contains("glibc.malloc.arena_max") { return nil }
        return Self.default
    }

    /// Applies ``limit(environment:)``; returns the limit applied (nil: none).
    @discardableResult
    package static func apply(environment: [String: String]) -> Int? {
        #if canImport(CMalloc)
        guard let limit = Self.limit(environment: environment), cmalloc_set_arena_max(Int32(limit)) == 1 else { return nil }
        return limit
        #else
        return nil
        #endif
    }
}
