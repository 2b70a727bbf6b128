//! Reserved-IP providers behind one trait: DigitalOcean, Hetzner Cloud, Vultr.
