"""Published datasets: shards with a sha256 manifest, registered in the farm database and fetched from peers."""
