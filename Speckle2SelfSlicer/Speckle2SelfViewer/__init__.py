"""The browser page of Speckle2Self (`speckle2self view`): a front end beside the Slicer module, on the same
Speckle2SelfSlicerLib logic, with Slicer's slice views rendered on the server by trame-slicer."""
