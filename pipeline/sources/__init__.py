"""Where episodes come from: checked HTTP (net), downloads and files (fetch), feeds, reference
texts, RTTM files, and the catalog of feeds and episodes."""
