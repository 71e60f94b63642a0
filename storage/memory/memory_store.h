// File: storage/memory/memory_store.h
//
// An in-memory Store (LevelDB's memenv idea): the full semantics of
// storage/store.h with nothing on disk, for fast unit tests of the server.
//
//   std::unique_ptr<Store> store = CreateMemoryStore();
//   REPROD_RETURN_IF_ERROR(store->CreateRun(run));
//
// Durability: none; everything is lost with the object. A writer buffers its
// tensor's bytes in memory until Commit; a reader shares the committed bytes
// (it keeps reading the tensor it opened even if the run is deleted or the
// tensor replaced meanwhile, like a RocksDB snapshot).
//
// Thread-safety: as storage/store.h (one mutex guards the state). Writers
// must not outlive the store; readers may.
#ifndef REPROD_STORAGE_MEMORY_MEMORY_STORE_H_
#define REPROD_STORAGE_MEMORY_MEMORY_STORE_H_

#include <memory>

#include "storage/store.h"

namespace reprod::storage {

// A new, empty in-memory store.
std::unique_ptr<Store> CreateMemoryStore();

}  // namespace reprod::storage

#endif  // REPROD_STORAGE_MEMORY_MEMORY_STORE_H_
