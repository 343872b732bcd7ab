//! Zero-copy views and Reprs for every header the datapath reads or writes.
