/// The version reported on the status topic and by `dang --version`.
package enum DangVersion {
    package static let current = "0.1.0"
}
