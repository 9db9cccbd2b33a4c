# Install AI Farm for this user on Windows: a private virtual environment in %LOCALAPPDATA%\aifarm,
# an `aifarm` launcher and a Startup-folder shortcut. Running it again upgrades in place and keeps the data.
#
#   powershell -ExecutionPolicy Bypass -File installer\install.ps1 [-Torch SPEC] [-Source DIR] [-NoAutostart]
#   powershell -ExecutionPolicy Bypass -File installer\install.ps1 -Uninstall [-Purge]
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

$Python = (Get-Command py -ErrorAction SilentlyContinue)
$PyArgs = @("-3.11")
if (-not $Python) { $Python = Get-Command python -ErrorAction Stop; $PyArgs = @() }
& $Python.Source @PyArgs -c "import sys; sys.exit(sys.version_info < (3, 11))"
if ($LASTEXITCODE -ne 0) { Write-Error "AI Farm needs Python 3.11 or newer (py -3.11)."; exit 1 }
if (-not (Test-Path (Join-Path $Source "pyproject.toml"))) { Write-Error "$Source is not an AI Farm source tree"; exit 2 }

$VenvPython = Join-Path $Venv "Scripts\python.exe"
if (Test-Path $VenvPython) { Write-Host "Upgrading AI Farm in $Venv (data and settings in $Home_ are kept)." }
else { Write-Host "Installing AI Farm into $Venv." ; New-Item -ItemType Directory -Force -Path $Home_ | Out-Null; & $Python.Source @PyArgs -m venv $Venv }
Write-Host "PyTorch will be installed as '$Torch' (the default CUDA builds download several GB; choose another with -Torch or AIFARM_TORCH_SPEC)."
$Constraints = Join-Path $Source "installer\constraints.txt"
& $VenvPython -m pip install -q --disable-pip-version-check --upgrade pip
if ($LASTEXITCODE -ne 0) { Write-Error "pip could not upgrade itself"; exit 1 }
# torch first and pinned: left to choose freely, pip would pick the newest build. Progress bars stay on.
& $VenvPython -m pip install --disable-pip-version-check -c $Constraints $Torch numpy
if ($LASTEXITCODE -ne 0) { Write-Error "pip could not install $Torch"; exit 1 }
& $VenvPython -m pip install -q --disable-pip-version-check -c $Constraints --upgrade $Source
if ($LASTEXITCODE -ne 0) { Write-Error "pip could not install AI Farm from $Source"; exit 1 }

New-Item -ItemType Directory -Force -Path $BinDir | Out-Null
Set-Content -Path $Launcher -Encoding ASCII -Value "@echo off`r`n`"$(Join-Path $Venv 'Scripts\aifarm.exe')`" %*"
if (-not $NoAutostart) {
    $Shell = New-Object -ComObject WScript.Shell
    $Link = $Shell.CreateShortcut($Shortcut)
    $Link.TargetPath = Join-Path $Venv "Scripts\aifarm.exe"
    $Link.Arguments = "run"
    $Link.Description = "AI Farm: donate spare GPU/CPU time to a LAN training farm"
    $Link.Save()
}
$UserPath = [Environment]::GetEnvironmentVariable("Path", "User")
if (-not ($UserPath -split ";" | Where-Object { $_ -eq $BinDir })) {
    [Environment]::SetEnvironmentVariable("Path", "$UserPath;$BinDir", "User")
    Write-Host "Added $BinDir to your PATH (new terminals)."
}
Write-Host "Done: start it with 'aifarm run' (it also starts at login). The dashboard prints its address."
