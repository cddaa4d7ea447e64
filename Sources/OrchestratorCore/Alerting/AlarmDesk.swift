package import Foundation
package import LibPQ
package import Logging

/// Alarm management in the manner of ISA-18.2: acknowledging and shelving alert episodes, from
/// HTTP (`POST /alerts/{id}/ack`, `/shelve`) and MQTT (`{prefix}/ack/{alert_id}`), each recorded in
/// `alerts` (`acked_at`, `acked_by`, `shelved_until`, `shelved_by`).
package final class AlarmDesk: Sendable {
    package enum Acknowledgement: Sendable, Equatable {
        case done
        case already
        case unknown
    }

    let shelf: AlertShelf
    let pool: DatabasePool
    let logger: Logger

    package init(shelf: AlertShelf, pool: DatabasePool, logger: Logger) {
        self.shelf = shelf
        self.pool = pool
        self.logger = logger
    }

    package func acknowledge(_ id: UUID, by: String?, on connection: PostgresConnection) throws -> Acknowledgement {
        let rows = try connection.query(
            "UPDATE alerts SET acked_at = now(), acked_by = $2 WHERE alert_id = $1 AND acked_at IS NULL RETURNING tag",
            [id.uuidString.lowercased(), by])
        if !rows.rows.isEmpty {
            self.logger.notice("alert acknowledged", metadata: ["alert.id": "\(id.uuidString.lowercased())", "by": "\(by ?? "-")"])
            return .done
        }
        let exists = try connection.query("SELECT 1 FROM alerts WHERE alert_id = $1", [id.uuidString.lowercased()])
        return exists.rows.isEmpty ? .unknown : .already
    }

    /// Shelves the alert's tag and kind until now + `duration`; returns that time (epoch ms), or nil
    /// for an unknown alert.
    package func shelve(_ id: UUID, for duration: Duration, by: String?, on connection: PostgresConnection) throws -> Int64? {
        let rows = try connection.query(
            """
            UPDATE alerts SET shelved_until = now() + make_interval(secs => $2), shelved_by = $3 WHERE alert_id = $1
            RETURNING tag, kind, (extract(epoch FROM shelved_until) * 1000)::bigint
            """, [id.uuidString.lowercased(), Double(duration.milliseconds) / 1000, by])
        guard let row = rows.rows.first, let tag = row[0], let kind = row[1].flatMap(AlertKind.init(rawValue:)),
            let until = row[2].flatMap({ Int64($0) })
        else { return nil }
        self.shelf.shelve(tag: tag, kind: kind, until: until)
        self.logger.notice("alarm shelved", metadata: ["alert.id": "\(id.uuidString.lowercased())", "until": "\(until)", "by": "\(by ?? "-")"])
        return until
    }

    /// Puts back on the shelf what was shelved before a restart (from `alerts.shelved_until`).
    package func loadShelves(on connection: PostgresConnection) {
        do {
            let rows = try connection.query(
                "SELECT tag, kind, (extract(epoch FROM shelved_until) * 1000)::bigint FROM alerts WHERE shelved_until > now()")
            for row in rows.rows {
                guard let tag = row[0], let kind = row[1].flatMap(AlertKind.init(rawValue:)), let until = row[2].flatMap({ Int64($0) }) else { continue }
                self.shelf.shelve(tag: tag, kind: kind, until: until)
            }
            if !rows.rows.isEmpty { self.logger.notice("shelved alarms restored", metadata: ["alarms": "\(rows.rows.count)"]) }
        } catch {
            self.logger.warning("shelved alarms not restored", metadata: ["error": "\(error)"])
        }
    }

    /// `{prefix}/ack/{alert_id}` with an optional `{"by": "name"}`: done on the database pool (the
    /// MQTT thread never waits on PostgreSQL; a flood is refused and counted there, never a thread
    /// and a connection per message).
    package func acknowledgeFromMQTT(_ idText: String, payload: [UInt8]) {
        guard let id = UUID(uuidString: idText) else {
            self.logger.warning("acknowledgement refused: not an alert id", metadata: ["alert.id": "\(idText.prefix(64))"])
            return
        }
        let by = ((try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any])?["by"].flatMap { $0 as? String }.map { String($0.prefix(200)) }
        self.pool.submit { connection in
            do {
                let result = try self.acknowledge(id, by: by, on: connection.get())
                if result == .unknown { self.logger.warning("acknowledgement for an unknown alert", metadata: ["alert.id": "\(id.uuidString.lowercased())"]) }
            } catch {
                self.logger.error("acknowledgement not recorded", metadata: ["alert.id": "\(id.uuidString.lowercased())", "error": "\(error)"])
            }
        }
    }
}
