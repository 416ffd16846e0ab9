"""Next Engine: the API client (``client``) and a local sandbox of the API (``sandbox``)."""
