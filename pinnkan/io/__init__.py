"""Files: model/adapter/state files, results.h5 and its XDMF sidecar, PNG plots."""
