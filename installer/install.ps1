# Install AI Farm for this user on Windows: a private virtual environment in %LOCALAPPDATA%\aifarm,
# an `aifarm` launcher and a Startup-folder shortcut to the windowless `aifarm-tray`. Running it again
# upgrades in place and keeps the data.
#
#   powershell -ExecutionPolicy Bypass -File installer\install.ps1 [-Torch SPEC] [-Source DIR] [-NoAutostart]
#   powershell -ExecutionPolicy Bypass -File installer\install.ps1 -Uninstall [-Purge]
#
#   PYTHON  the Python to use (default: `py -3`, the newest Python 3 the py launcher knows, then `python`)
param(
    [string]$Torch = $(if ($env:AIFARM_TORCH_SPEC) { $env:AIFARM_TORCH_SPEC } else { "torch==2.13.0" }),
    [string]$Source = (Split-Path -Parent $PSScriptRoot),
    [switch]$Uninstall,
    [switch]$Purge,
    [switch]$NoAutostart
)
$ErrorActionPreference = "Stop"
$Home_ = if ($env:AIFARM_HOME) { $env:AIFARM_HOME } else { Join-Path $env:LOCALAPPDATA "aifarm" }
$Venv = Join-Path $Home_ "venv"
$BinDir = Join-Path $env:LOCALAPPDATA "Programs\aifarm"
$Launcher = Join-Path $BinDir "aifarm.cmd"
$Startup = [Environment]::GetFolderPath("Startup")
$Shortcut = Join-Path $Startup "AI Farm.lnk"
$Steps = Join-Path $PSScriptRoot "steps.py"

function Fail([string]$Message, [int]$Code = 1) {
    [Console]::Error.WriteLine("install.ps1: $Message")
    exit $Code
}

if ($Uninstall) {
    Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $Venv, $BinDir, $Shortcut
    if ($Purge) {
        Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $Home_
        Write-Host "AI Farm removed, with its data ($Home_)."
    } else {
        Write-Host "AI Farm removed. Its data stays in $Home_ (use -Uninstall -Purge to delete it too)."
    }
    exit 0
}

# The first Python 3.11 or newer: $env:PYTHON when set, else `py -3`, else `python`.
if ($env:PYTHON) { $Candidates = @(, @($env:PYTHON)) } else { $Candidates = @(@("py", "-3"), @(, "python")) }
$PyExe = $null
$PyArgs = @()
foreach ($Candidate in $Candidates) {
    $Exe = $Candidate[0]
    $Rest = @($Candidate | Select-Object -Skip 1)
    if (-not (Get-Command $Exe -ErrorAction SilentlyContinue)) { continue }
    & $Exe @Rest -c "import sys; sys.exit(sys.version_info < (3, 11))"
    if ($LASTEXITCODE -eq 0) { $PyExe = $Exe; $PyArgs = $Rest; break }
}
if (-not $PyExe) { Fail "AI Farm needs Python 3.11 or newer (py -3, python, or set PYTHON to its path)." }
if (-not (Test-Path (Join-Path $Source "pyproject.toml"))) { Fail "$Source is not an AI Farm source tree" 2 }

$VenvPython = Join-Path $Venv "Scripts\python.exe"
if (Test-Path $VenvPython) { Write-Host "Upgrading AI Farm in $Venv (data and settings in $Home_ are kept)." }
else {
    Write-Host "Installing AI Farm into $Venv."
    New-Item -ItemType Directory -Force -Path $Home_ | Out-Null
    & $PyExe @PyArgs -m venv $Venv
    if ($LASTEXITCODE -ne 0) { Fail "could not create the virtual environment $Venv" }
}
& $PyExe @PyArgs $Steps torch-note --torch $Torch
if ($LASTEXITCODE -ne 0) { Fail "$Steps failed" }
# pip, then PyTorch pinned (pip's progress shown), then AI Farm with the tested versions of the rest
# (installer\constraints.txt); steps.py stops at the first failed pip call and names it.
& $PyExe @PyArgs $Steps pip-install --python $VenvPython --source $Source --torch $Torch
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

New-Item -ItemType Directory -Force -Path $BinDir | Out-Null
Set-Content -Path $Launcher -Encoding ASCII -Value "@echo off`r`n`"$(Join-Path $Venv 'Scripts\aifarm.exe')`" %*"
if (-not $NoAutostart) {
    $Fields = (& $PyExe @PyArgs $Steps windows-shortcut --venv $Venv) -join "`n"
    if ($LASTEXITCODE -ne 0) { Fail "$Steps windows-shortcut failed" }
    $Fields = $Fields | ConvertFrom-Json
    $Shell = New-Object -ComObject WScript.Shell
    $Link = $Shell.CreateShortcut($Shortcut)
    $Link.TargetPath = $Fields.target
    $Link.Arguments = $Fields.arguments
    $Link.Description = $Fields.description
    $Link.Save()
}
$UserPath = [Environment]::GetEnvironmentVariable("Path", "User")
if (-not ($UserPath -split ";" | Where-Object { $_ -eq $BinDir })) {
    [Environment]::SetEnvironmentVariable("Path", "$UserPath;$BinDir", "User")
    Write-Host "Added $BinDir to your PATH (new terminals)."
}
Write-Host "Done: start it with 'aifarm run' (it also starts at login, with its tray icon). The dashboard prints its address."
