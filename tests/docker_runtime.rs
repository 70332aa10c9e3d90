//! `userctl up --runtime docker`: five containers on the real Docker engine.
