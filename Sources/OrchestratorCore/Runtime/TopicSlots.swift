import Foundation
package import Logging
import Synchronization

/// Topic bytes → slot for the topics of single tags, looked up without building a String or
/// touching a reference count: an open-addressing table keyed by an FNV-1a hash of the bytes,
/// then a byte comparison against one shared buffer of every topic's bytes. At most one entry
/// per slot, so it is bounded by `detection.max_tags`.
struct TopicSlots {
    private struct Entry {
        var hash: UInt64 = 0
        /// Where the topic's bytes are in `bytes`.
        var offset = 0
        var length: Int32 = 0
        /// -1: an empty cell.
        var slot: Int32 = -1
    }

    /// A power of two, at most half full.
    private var table = [Entry](repeating: Entry(), count: 64)
    private var bytes: [UInt8] = []
    private var count = 0

    static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    /// The topic's entry (for ``topic(_:)``, until the next insert) and slot.
    func find(_ key: UnsafeRawBufferPointer, hash: UInt64) -> (entry: Int, slot: Int32)? {
        self.table.withUnsafeBufferPointer { table in
            self.bytes.withUnsafeBufferPointer { bytes in
                let mask = table.count - 1
                // FNV-1a's low bits see only the low bits of each byte: fold the high half in.
                var cell = Int(truncatingIfNeeded: hash ^ (hash >> 32)) & mask
                while true {
                    let entry = table[cell]
                    if entry.slot < 0 { return nil }
                    if entry.hash == hash, Int(entry.length) == key.count,
                        key.isEmpty || memcmp(bytes.baseAddress! + entry.offset, key.baseAddress!, key.count) == 0
                    {
                        return (cell, entry.slot)
                    }
                    cell = (cell + 1) & mask
                }
            }
        }
    }

    /// The topic of an entry, made from its bytes (only when an alert needs it).
    func topic(_ entry: Int) -> String {
        let held = self.table[entry]
        return String(decoding: self.bytes[held.offset..<(held.offset + Int(held.length))], as: UTF8.self)
    }

    /// Drops the topics of the given slots (their tags were evicted): the table and the byte
    /// buffer are rebuilt without them.
    mutating func remove(slots: Set<Int32>) {
        let old = self.table
        let oldBytes = self.bytes
        self.table = [Entry](repeating: Entry(), count: old.count)
        self.bytes = []
        self.count = 0
        for entry in old where entry.slot >= 0 && !slots.contains(entry.slot) {
            let start = self.bytes.count
            self.bytes.append(contentsOf: oldBytes[entry.offset..<(entry.offset + Int(entry.length))])
            self.count += 1
            self.place(Entry(hash: entry.hash, offset: start, length: entry.length, slot: entry.slot))
        }
    }

    mutating func insert(_ key: UnsafeRawBufferPointer, hash: UInt64, slot: Int32) {
        guard self.find(key, hash: hash) == nil, key.count <= Int(Int32.max) else { return }
        if (self.count + 1) * 2 > self.table.count {
            let old = self.table
            self.table = [Entry](repeating: Entry(), count: old.count * 2)
            for entry in old where entry.slot >= 0 { self.place(entry) }
        }
        let entry = Entry(hash: hash, offset: self.bytes.count, length: Int32(key.count), slot: slot)
        self.bytes.append(contentsOf: key)
        self.count += 1
        self.place(entry)
    }

    private mutating func place(_ entry: Entry) {
        let mask = self.table.count - 1
        var cell = Int(truncatingIfNeeded: entry.hash ^ (entry.hash >> 32)) & mask
        while self.table[cell].slot >= 0 { cell = (cell + 1) & mask }
        self.table[cell] = entry
    }
}
