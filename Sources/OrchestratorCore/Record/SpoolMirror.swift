/// Decoded copies of the records at the tail of the spool, so the record writer does not parse back
/// the JSON it has just written: in steady operation every record it reads from the spool is still
/// here, and only a backlog (the database was away, or the process restarted) is decoded.
///
/// The spool is FIFO, so the mirror holds its newest records in order; what the mirror lacks is the
/// head of the pending bytes. Pending bytes are known exactly (`Spool.pendingBytes`), so the head
/// part without copies is `pendingBytes − bytes`, and a payload read from the spool is a mirrored
/// record exactly when it starts at or after that point. At most `capacity` records are held (the
/// oldest are let go: they are decoded instead), so an outage costs no memory.
///
/// Not synchronised: its owner mutates it under the lock that guards the spool's appends.
struct SpoolMirror {
    private struct Entry {
        /// The record's bytes in the spool (header and payload).
        let bytes: Int
        let record: Record
    }

    private var entries: [Entry] = []
    private var head = 0
    /// Spool bytes of the records held.
    private(set) var bytes = 0
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(0, capacity)
    }

    var count: Int { self.entries.count - self.head }

    /// Adds the record just appended to the spool as `spoolBytes` bytes.
    mutating func push(_ record: Record, spoolBytes: Int) {
        guard self.capacity > 0 else { return }
        if self.count == self.capacity { self.dropFirst() }
        self.entries.append(Entry(bytes: spoolBytes, record: record))
        self.bytes += spoolBytes
    }

    /// The copies of a batch read from the head of the spool's `pendingBytes`: for each payload
    /// (by its size in the spool, header included), its record if the mirror holds it, else `nil`.
    /// Once anything does not line up, the rest is `nil` (decoded): never a wrong record.
    func lookup(pendingBytes: Int, spoolSizes: [Int]) -> [Record?] {
        var unmirrored = pendingBytes - self.bytes
        var aligned = unmirrored >= 0
        var index = self.head
        var records: [Record?] = []
        records.reserveCapacity(spoolSizes.count)
        for size in spoolSizes {
            if aligned, unmirrored == 0, index < self.entries.count, self.entries[index].bytes == size {
                records.append(self.entries[index].record)
                index += 1
                continue
            }
            if unmirrored > 0 {
                unmirrored -= size
                aligned = aligned && unmirrored >= 0
            } else {
                aligned = false
            }
            records.append(nil)
        }
        return records
    }

    /// After records were written and the spool's head advanced: lets go of the copies that are no
    /// longer in its `pendingBytes` (the oldest ones).
    mutating func trim(pendingBytes: Int) {
        while self.count > 0, self.bytes > pendingBytes { self.dropFirst() }
    }

    mutating func removeAll() {
        self.entries.removeAll(keepingCapacity: true)
        self.head = 0
        self.bytes = 0
    }

    private mutating func dropFirst() {
        self.bytes -= self.entries[self.head].bytes
        self.head += 1
        if self.head == self.entries.count {
            self.entries.removeAll(keepingCapacity: true)
            self.head = 0
        } else if self.head >= 1024 && self.head * 2 >= self.entries.count {
            self.entries.removeFirst(self.head)
            self.head = 0
        }
    }
}
