//! Who is asking: a person's role and scope, as a session says (`auth.rs` finds it, the pages
//! and queries read it).

/// The level a person works at; their scope is that level's code (the company's is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Community,
    Street,
    District,
    Company,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Community => "community",
            Role::Street => "street",
            Role::District => "district",
            Role::Company => "company",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Community, Role::Street, Role::District, Role::Company]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The signed-in person.
#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub role: Role,
    pub scope: String,
    pub csrf: String,
    pub address: String,
}

impl Who {
    /// Their first page.
    pub fn home(&self) -> String {
        match self.role {
            Role::Community => format!("/c/{}", self.scope),
            Role::Street => format!("/s/{}", self.scope),
            Role::District => format!("/d/{}", self.scope),
            Role::Company => "/fleet".into(),
        }
    }
}
