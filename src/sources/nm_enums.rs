pub mod nm_enums {}
