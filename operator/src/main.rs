fn main() -> anyhow::Result<()> {
    print!("{}", modelfleet_operator::crdgen::crd_yaml()?);
    Ok(())
}
