import TrancheSQLite
import TrancheStore

enum TrancheSQLiteStoreOpener {
    static func open(_ path: String) throws -> any BatchStore { try SQLiteBatchStore(path: path) }
}
