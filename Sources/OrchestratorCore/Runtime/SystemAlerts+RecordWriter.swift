extension SystemAlerts {
    /// Makes alerts of what the record writer reports about itself (the spool filling up, records
    /// set aside). Give the writer as the first sink, so each alert is recorded before it is
    /// published. The writer holds this weakly (this holds the writer): keep a reference.
    package func follow(_ writer: RecordWriter, spoolDirectory: String) {
        writer.reportConditions { [weak self] condition in
            guard let self else { return }
            switch condition {
            case .spool(let full, let used, let capacity):
                self.report(.spool(full: full, used: used, capacity: capacity, directory: spoolDirectory))
            case .recordSetAside(let total, let file, let sqlState):
                self.report(.recordSetAside(total: total, file: file, sqlState: sqlState))
            }
        }
    }
}
