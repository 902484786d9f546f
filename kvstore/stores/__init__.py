"""Store backends, one module each; imported lazily by :func:`kvstore.open_store`."""
