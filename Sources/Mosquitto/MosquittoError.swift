internal import CMosquitto

/// An error from libmosquitto: which function failed and its `mosq_err_t` code.
///
/// The description names the function and libmosquitto's message, never credentials.
package struct MosquittoError: Error, CustomStringConvertible, Sendable {
    /// A libmosquitto result code (`MOSQ_ERR_*`).
    package struct Code: Hashable, Sendable {
        package let rawValue: Int32
        package init(rawValue: Int32) { self.rawValue = rawValue }

        package static let outOfMemory = Code(rawValue: MOSQ_ERR_NOMEM.rawValue)
        package static let noConnection = Code(rawValue: MOSQ_ERR_NO_CONN.rawValue)
        package static let invalidArgument = Code(rawValue: MOSQ_ERR_INVAL.rawValue)
        package static let payloadTooLarge = Code(rawValue: MOSQ_ERR_PAYLOAD_SIZE.rawValue)
    }

    package let code: Code
    package let function: String

    package init(code: Code, function: StaticString) {
        self.code = code
        self.function = "\(function)"
    }

    package init(code: Code, function: String) {
        self.code = code
        self.function = function
    }

    package var description: String {
        "\(self.function): \(String(cString: mosquitto_strerror(self.code.rawValue)))"
    }
}
